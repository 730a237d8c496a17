"""The Lua scripts the cluster runs in Redis, each one atomic step of its protocol."""

from __future__ import annotations

__all__ = ["APPEND", "COMMIT", "JOIN", "SEED"]

JOIN = """
-- KEYS: counter, stream, epoch. ARGV: the node's highest seq, an epoch to use if none is set.
-- Returns the cluster epoch and the stream id to read after: a node that rejoins (Redis
-- restarted, or the node ran alone meanwhile) skips what it cannot place in its own sequence.
redis.call('SET', KEYS[3], ARGV[2], 'NX')
local floor = tonumber(ARGV[1])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local last_id = '0-0'
if #last > 0 then
  last_id = last[1][1]
  floor = math.max(floor, tonumber(string.match(last_id, '^(%d+)')))
end
local counter = tonumber(redis.call('GET', KEYS[1]) or '0')
if floor > counter then
  redis.call('SET', KEYS[1], floor)
end
return {redis.call('GET', KEYS[3]), last_id}
"""

APPEND = """
-- KEYS: counter, stream. ARGV: max stream length, node, message count, the messages as one msgpack
-- array, the node's own number for the batch. One entry per batch: its id is the cluster-wide
-- sequence number of the batch's last message, so every node numbers them alike; the stream's
-- last id bounds the counter from below in case the counter was lost.
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if #last > 0 then
  seq = math.max(seq, tonumber(string.match(last[1][1], '^(%d+)')))
end
seq = seq + tonumber(ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], seq .. '-0',
  'n', ARGV[2], 'c', ARGV[3], 'm', ARGV[4], 'b', ARGV[5])
redis.call('SET', KEYS[1], seq)
return seq
"""

SEED = """
-- KEYS: manifest hash. ARGV: text, revision. Stores them unless a manifest is stored already
-- (a node that outlived a Redis restart seeds the revision it runs, so revisions never go back).
-- Returns the stored revision and text.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'revision', ARGV[2], 'text', ARGV[1])
end
return redis.call('HMGET', KEYS[1], 'revision', 'text')
"""

COMMIT = """
-- KEYS: manifest hash, notice stream. ARGV: expected revision, text, node.
-- Compare and set: only a writer that saw the current revision commits the next one; the
-- notice wakes every node's control plane.
local current = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
redis.call('HSET', KEYS[1], 'revision', current + 1, 'text', ARGV[2], 'node', ARGV[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100, '*', 'revision', current + 1)
return {1, current + 1}
"""
