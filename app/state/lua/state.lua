-- keypool's shared key state, part 1 of 3 (state.lua, keys.lua and pool.lua are joined in that
-- order into one library by app/state/redis_scripts.py, loaded as a Redis function, or run as a
-- script on servers without functions): app/keys (pool.py, transitions.py, pacing.py,
-- breaker.py, stall.py, strategies.py) ported line for line, so that one provider's decision
-- runs atomically in Redis. Every call enters through `run(keys, argv)` (end of pool.lua), which
-- resets the per-call state below: nothing but the decoded provider specs outlives a call.
-- The Python modules are the specification: tests/integration/state/test_parity.py runs the same
-- random operations on this script and on the in-process KeyPool and requires identical answers.
-- Python keeps what needs no shared state: outcome classification, Retry-After parsing, the cost
-- estimate, the pacing constants (sent in the provider spec) and the random draw (sent as `u`).
--
-- KEYS[1]  the provider's hash: field "meta" (cursor, breaker, pool latency) and one field per key
--          index; values are MessagePack records with the fields of KeyStatus except in_flight,
--          plus `flights` = {instance id: requests in flight}
-- KEYS[2]  the instances' sorted set (member: instance id, score: last heartbeat, unix seconds)
-- ARGV     op, provider spec (JSON), now, this instance's id, op arguments (JSON)
-- The upper-case placeholders below are filled in from the Python constants at load time.

local TRIAL_HOLD_S = __TRIAL_HOLD_S__
local DEFAULT_COOLDOWN_S = __DEFAULT_COOLDOWN_S__
local MAX_DEFAULT_COOLDOWN_S = __MAX_DEFAULT_COOLDOWN_S__
local FAIL_AFTER_ERRORS = __FAIL_AFTER_ERRORS__
local LATENCY_EWMA_WEIGHT = __LATENCY_EWMA_WEIGHT__
local MIN_HEALTH = __MIN_HEALTH__
local STALL_FLOOR_S = __STALL_FLOOR_S__
local STALL_FACTOR = __STALL_FACTOR__
local INSTANCE_TTL_S = __INSTANCE_TTL_S__
local TRIAL_LEASE_S = __TRIAL_LEASE_S__
local RECORD_TTL_MS = __RECORD_TTL_MS__
local REQUEST_HEADROOM = __REQUEST_HEADROOM__
local UNANNOUNCED_COOLDOWN_S = __UNANNOUNCED_COOLDOWN_S__

local ACTIVE, RATE_LIMITED, FAILED, DISABLED = 'active', 'rate_limited', 'failed', 'disabled'
local W_NONE, W_BUDGET, W_COOLDOWN, W_HELD = 0, 1, 2, 3

local op, spec, now, me, args, hash_key, instances_key
-- `keys` holds the records read so far (by index), `packed` the ones fetched but not unpacked yet
-- (false: no record), `fetched` whether every record is in `packed`: a choice that finds its
-- key early never pays for reading or unpacking the rest of a large pool.
local keys, packed, fetched, dirty, meta, meta_dirty

-- Record names (key vault) --------------------------------------------------------------------
-- A key's record is named by its index, or by the stable name the provider spec gives it
-- (`fields`: vault keys are "v<id>"), so a record follows its key when positions shift.
local function field(index)
  if spec.fields ~= nil then return spec.fields[index + 1] end
  return tostring(index)
end

-- Loading and saving ------------------------------------------------------------------------

local alive_cache
local function alive(instance)
  if instance == me then return true end
  local known = alive_cache[instance]
  if known == nil then
    local score = redis.call('ZSCORE', instances_key, instance)
    known = score ~= false and tonumber(score) >= now - INSTANCE_TTL_S
    alive_cache[instance] = known
  end
  return known
end

local function fresh()
  return {state = ACTIVE, announced = false, failures = 0, requests = 0, errors = 0,
          health_factor = 1.0, auth_failed = false, tat_requests = 0, tat_tokens = 0}
end

-- A crashed instance cannot pin a key: its flights stop counting once its heartbeat expires.
local function adopt(index, blob)
  local rec = blob and cmsgpack.unpack(blob) or fresh()
  if type(rec.flights) ~= 'table' then rec.flights = {} end
  local total = 0
  for instance, n in pairs(rec.flights) do
    if alive(instance) then total = total + n else rec.flights[instance] = nil; dirty[index] = true end
  end
  rec.in_flight = total
  keys[index] = rec
  return rec
end

local stored_cursor, cursor_moved, created
local function adopt_meta(blob)
  -- No meta: the hash is new (or expired), and the write that creates it sets its expiry.
  created = not blob
  meta = blob and cmsgpack.unpack(blob) or {cursor = 0, failures = 0}
  -- Key vault: a list that shrank (or another instance's longer one) leaves the cursor past
  -- the end; it is read modulo the key count, and stored as it was until a choice moves it
  -- (as KeyPool keeps its cursor across a resize).
  stored_cursor = meta.cursor
  meta.cursor = meta.cursor % spec.n
end

local function load_all()
  local raw = redis.call('HGETALL', hash_key)
  for i = 1, #raw, 2 do packed[raw[i]] = raw[i + 1] end
  fetched = true
  adopt_meta(packed.meta)
end

-- The provider's meta, and the record of `hint` in the same read (the key the caller expects
-- to be chosen: usually it is, and the choice then reads nothing more); other records are
-- fetched as they are needed (`record`, `fetch_rest`). A hint only saves reads: no decision
-- depends on it.
local function load_meta(hint)
  if type(hint) ~= 'number' or hint < 0 or hint >= spec.n or hint % 1 ~= 0 then
    return adopt_meta(redis.call('HGET', hash_key, 'meta') or nil)
  end
  local name = field(hint)
  local raw = redis.call('HMGET', hash_key, 'meta', name)
  packed[name] = raw[2]
  adopt_meta(raw[1] or nil)
end

-- Every record not fetched yet, in one read.
local function fetch_rest()
  if fetched then return end
  local names = {}
  for i = 0, spec.n - 1 do
    local name = field(i)
    if packed[name] == nil then names[#names + 1] = name end
  end
  if #names > 0 then
    local raw = redis.call('HMGET', hash_key, unpack(names))
    for j, name in ipairs(names) do packed[name] = raw[j] end
  end
  fetched = true
end

local function record(index)
  local rec = keys[index]
  if rec ~= nil then return rec end
  local name = field(index)
  local blob = packed[name]
  if blob == nil and not fetched then
    blob = redis.call('HGET', hash_key, name)
    packed[name] = blob
  end
  return adopt(index, blob or nil)
end

local function load_one(index)
  local raw = redis.call('HMGET', hash_key, 'meta', field(index))
  adopt_meta(raw[1] or nil)
  return adopt(index, raw[2] or nil)
end

local function refresh()
  redis.call('PEXPIRE', hash_key, RECORD_TTL_MS)
end

local function save()
  local out = {}
  for index in pairs(dirty) do
    local rec = keys[index]
    local in_flight = rec.in_flight
    rec.in_flight = nil
    out[#out + 1] = field(index)
    out[#out + 1] = cmsgpack.pack(rec)
    rec.in_flight = in_flight
  end
  if meta_dirty then
    if stored_cursor ~= nil and not cursor_moved then
      meta.cursor = stored_cursor  -- not moved by this call: keep it as stored
    end
    out[#out + 1] = 'meta'; out[#out + 1] = cmsgpack.pack(meta)
  end
  if #out > 0 then
    redis.call('HSET', hash_key, unpack(out))
    -- Set when the hash is created, renewed by every instance's heartbeat (`ops.snapshot`):
    -- not on every write, which would cost a command per request.
    if created then refresh() end
  end
end

local function public(rec)
  local copy = {}
  for k, v in pairs(rec) do if k ~= 'flights' then copy[k] = v end end
  return copy
end

