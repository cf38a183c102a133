//! The Lua scripts that make ownership safe: each runs atomically inside Redis, so checking the
//! lease and acting on it can never be split by another node's write.

/// KEYS lease, fence, events, epoch, offset, status, requests; ARGV node, ttl_ms, new epoch.
/// Takes a vacant lease with a fresh fencing token. Returns {lease, last request id, epoch,
/// last status} or nil when the lease is held. A missing epoch means the history is gone
/// (first start, or Redis lost its data): a new epoch starts at offset 0.
pub const ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
local lease = ARGV[1] .. '/' .. token
redis.call('SET', KEYS[1], lease, 'PX', ARGV[2])
local epoch = redis.call('GET', KEYS[4])
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[3], KEYS[5], KEYS[6])
  redis.call('SET', KEYS[4], epoch)
end
local last = redis.call('XREVRANGE', KEYS[7], '+', '-', 'COUNT', 1)
local from = '0-0'
if #last > 0 then from = last[1][1] end
local status = redis.call('GET', KEYS[6]) or ''
return {lease, from, epoch, status}
"#;

/// KEYS leases; ARGV ttl_ms, then the lease value expected in each. Extends those still held
/// by their caller; returns 1 or 0 per key.
pub const RENEW: &str = r#"
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"#;

/// KEYS lease; ARGV lease value. Deletes the lease only if the caller still holds it.
pub const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// KEYS lease, events, offset, status, banner; ARGV lease value, maxlen, then kind, data pairs.
/// The fence: nothing is written unless the caller holds the lease at this instant. Broadcast
/// kinds take the next offset as entry id `<offset>-0`; replies go after the current offset as
/// `<offset>-<n>`, so offsets count broadcast frames only. Returns the last offset, or nil.
pub const PUBLISH: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local off = tonumber(redis.call('GET', KEYS[3]) or '0')
for i = 3, #ARGV, 2 do
  local kind, data = ARGV[i], ARGV[i + 1]
  if kind == 'r' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], off .. '-*', 'k', kind, 'd', data)
  else
    off = off + 1
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], off .. '-0', 'k', kind, 'd', data)
    if kind == 's' then redis.call('SET', KEYS[4], data) end
    if kind == 'g' then redis.call('SET', KEYS[5], data) end
  end
end
redis.call('SET', KEYS[3], off)
return off
"#;

/// KEYS lease, requests; ARGV maxlen, data. Queues an action for the current owner, stamped
/// with its lease (an owner runs only what was addressed to its own lease). Nil = no owner.
pub const REQUEST: &str = r#"
local lease = redis.call('GET', KEYS[1])
if not lease then return false end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 't', lease, 'd', ARGV[2])
return lease
"#;
