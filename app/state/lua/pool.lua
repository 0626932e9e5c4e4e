-- Part 3 of the shared key state script: choosing a key, and the operations Python calls.

-- pool.py -----------------------------------------------------------------------------------

local function ready_at(rec, tokens)
  if rec.state == FAILED or rec.state == DISABLED then return nil end
  local at, wait = now, W_NONE
  if rec.state == RATE_LIMITED then
    local held = rec.trial_until
    if held ~= nil and held > now then return math.max(held, rec.cooldown_until or now), W_HELD end
    local till = rec.cooldown_until
    if till == nil then return nil end
    if till > now then at, wait = till, W_COOLDOWN end
  end
  local p = pace_of(rec)
  if p.paced then
    local slot = slot_at(rec, tokens, p)
    if slot > at then at, wait = slot, W_BUDGET end
  end
  return at, wait
end

local function pick(free, ask)
  local candidates = {}
  for _, i in ipairs(free) do if not stalled(i) then candidates[#candidates + 1] = i end end
  if #candidates == 0 then candidates = free end
  if next(ask.avoid) ~= nil then
    local least, kept = math.huge, {}
    for _, i in ipairs(candidates) do least = math.min(least, ask.avoid[tostring(i)] or 0) end
    for _, i in ipairs(candidates) do
      if (ask.avoid[tostring(i)] or 0) == least then kept[#kept + 1] = i end
    end
    candidates = kept
  end
  for _, i in ipairs(candidates) do if i == ask.preferred then return i end end
  local index = strategy_pick(candidates, ask.draw)
  meta.cursor, meta_dirty, cursor_moved = (index + 1) % spec.n, true, true
  return index
end

local function start(index, at, tokens)
  local rec = record(index)
  record_start(rec, at)
  local p = pace_of(rec)
  if p.paced then take(rec, tokens, at, p) end
  dirty[index] = true
end

local function within(at, wait, ask)
  if wait == W_BUDGET then return at - now <= ask.max_queue_s end
  if wait == W_COOLDOWN then return at - now <= ask.max_wait_s end
  return false
end

local function earlier(a, b)
  if a.at ~= b.at then return a.at < b.at end
  if a.distance ~= b.distance then return a.distance < b.distance end
  return a.index < b.index
end

-- Round robin with no batch siblings to spread over: the preferred key if it is free and
-- healthy, else the first free, healthy key from the cursor on, is exactly what `pick` would
-- choose from the full picture, found without reading the rest of a large pool. Nil when no
-- key is both (the full computation then sorts out stalls, turns and refusals).
local function quick_pick(ask, excluded)
  if spec.strategy ~= 'round_robin' or next(ask.avoid) ~= nil then return nil end
  local function serves_now(i)
    if excluded[i] then return false end
    local at, wait = ready_at(record(i), ask.tokens)
    return at ~= nil and at <= now and wait ~= W_HELD and not stalled(i)
  end
  local preferred = ask.preferred
  if preferred ~= nil and preferred >= 0 and preferred < spec.n and serves_now(preferred) then
    return preferred
  end
  for step = 0, spec.n - 1 do
    if step == 4 then fetch_rest() end  -- a long search: the rest in one read
    local i = (meta.cursor + step) % spec.n
    if serves_now(i) then
      meta.cursor, meta_dirty, cursor_moved = (i + 1) % spec.n, true, true
      return i
    end
  end
  return nil
end

local function choose(ask)
  local excluded, free, turns, first = {}, {}, {}, nil
  for _, i in ipairs(ask.exclude) do excluded[i] = true end
  local quick = quick_pick(ask, excluded)
  if quick ~= nil then
    start(quick, now, ask.tokens)
    return {index = quick}
  end
  fetch_rest()
  for i = 0, spec.n - 1 do
    local at, wait = ready_at(record(i), ask.tokens)
    if at ~= nil then
      first = first == nil and at or math.min(first, at)
      if not excluded[i] then
        if at <= now and wait ~= W_HELD then
          free[#free + 1] = i
        elseif within(at, wait, ask) and not stalled(i) then
          turns[#turns + 1] = {at = at, distance = (i - meta.cursor) % spec.n, index = i, wait = wait}
        end
      end
    end
  end
  if #free > 0 then
    local index = pick(free, ask)
    start(index, now, ask.tokens)
    return {index = index}
  end
  table.sort(turns, earlier)
  local turn = turns[1]
  if turn ~= nil and ask.reserve then
    -- no jitter on a paced key: its turns are spaced already (KeyPool.choose)
    local jitter = turn.wait == W_COOLDOWN and not pace_of(record(turn.index)).paced
    start(turn.index, turn.at, ask.tokens)
    return {index = turn.index, delay_s = turn.at - now, after_cooldown = jitter}
  end
  return {
    wait_s = first and math.max(0, first - now),
    reservable_s = turn and turn.at - now,
    refused = first == nil and 'no_usable_key' or 'rate_limited',
  }
end

-- shared_limit.py: the provider-wide limit detector (its memory lives in `meta`) -------------

local function shared_extend(till)
  if not meta.shared_seen then
    meta.shared_seen = true
    pace_cache = {}  -- learned limits are now split between the keys
  end
  if meta.shared_until == nil or till > meta.shared_until then meta.shared_until = till end
  return meta.shared_until
end

local function shared_observe(index, signal, own_budget)
  local wait = signal.retry_after
  if wait == nil then wait = signal.exhausted end
  local reset = nil
  if wait ~= nil then reset = now + wait end
  local prev = meta.last429
  -- the key by its record name, not its position: a changed key list (vault) keeps the memory
  local name = field(index)
  meta.last429, meta_dirty = {key = name, at = now, reset = reset, own = own_budget}, true
  if spec.shared == 'false' then return nil end
  if spec.shared == 'true' then
    if reset == nil then reset = now + UNANNOUNCED_COOLDOWN_S end
    return shared_extend(reset)
  end
  if meta.shared_seen and reset ~= nil then
    return shared_extend(reset)  -- known to be per account: this 429 is the account's
  end
  if prev == nil then return nil end
  local a, b = prev.reset, reset
  if prev.key == name or a == nil or b == nil then return nil end
  if math.abs(now - prev.at) > spec.shared_window then return nil end
  -- the second key's own bucket had room by the provider's word: it cannot be what refused
  if not own_budget then return nil end
  if now < a and prev.at < b then return shared_extend(math.max(a, b)) end
  return nil
end

-- Operations --------------------------------------------------------------------------------

local ops = {}

function ops.acquire()
  load_meta(args.hint)
  if args.admit and not breaker_allow() then
    save()
    return cjson.encode({refused = 'circuit_open'})
  end
  local grant = choose(args)
  if grant.index == nil and args.admit and meta.trial_at ~= nil then
    meta.trial_at, meta_dirty = nil, true
  end
  save()
  return cjson.encode(grant)
end

function ops.release()
  local limited = args.outcome == 'rate_limited'
  local rec
  if limited then  -- an account-wide limit may cool every key: read them all (429s only)
    load_all()
    rec = record(args.index)
  else
    rec = load_one(args.index)
  end
  local known_bad = rec.state == FAILED
  local unknown = rec.learned_requests == nil and rec.learned_tokens == nil
  -- shared_limit.has_own_budget, read before this answer's remaining replaces it
  local own_budget = false
  if rec.budget_left ~= nil and rec.budget_reset_at ~= nil then
    if rec.budget_reset_at > now then own_budget = rec.budget_left > 0
    else own_budget = rec.in_flight <= 1 end
  end
  record_outcome(rec, args)
  if unknown and args.outcome == 'ok' then
    local p = pace_of(rec)
    if p ~= spec and p.paced then take(rec, 0, now, p) end
  end
  if args.outcome == 'ok' and args.latency ~= nil then
    meta.latency_ewma = blend(meta.latency_ewma, args.latency)
  end
  -- as KeyPool.release: a failed key's late failures are neutral for the breaker
  if known_bad and args.provider_failure then
    breaker_record({outcome = 'cancelled', provider_failure = false})
  else
    breaker_record(args)
  end
  dirty[args.index] = true
  if limited then
    local till = shared_observe(args.index, args.signal, own_budget)
    if till ~= nil then
      for i = 0, spec.n - 1 do
        cool_down(record(i), till - now)
        dirty[i] = true
      end
    end
  end
  save()
  return '{}'
end

function ops.recheck()
  local rec = load_one(args.index)
  local till = rec.cooldown_until
  local cooling = rec.state == RATE_LIMITED and rec.announced
  if not cooling or till == nil or till <= now then return '0' end
  local p = pace_of(rec)
  if not p.paced then return tostring(till - now) end
  -- pacing.Pace.request_slip: a reset that near keeps the turn's slot
  if p.rpm and not p.tpm and till - now <= 60.0 * REQUEST_HEADROOM then
    return tostring(till - now)
  end
  local at = math.max(till, slot_at(rec, args.tokens, p))
  take(rec, args.tokens, at, p)
  dirty[args.index] = true
  save()
  return tostring(at - now)
end

function ops.set_disabled()
  local rec = load_one(args.index)
  if args.disabled then
    rec.state, rec.trial_until = DISABLED, nil
  elseif rec.state == DISABLED then
    -- as transitions.set_disabled: enable lifts the disable, not the evidence under it
    if rec.auth_failed then
      fail(rec, true)
    elseif rec.cooldown_until ~= nil then
      rec.state = RATE_LIMITED
    elseif rec.failures >= FAIL_AFTER_ERRORS then
      fail(rec, false)
    else
      reactivate(rec)
    end
  end
  dirty[args.index] = true
  save()
  return cjson.encode(public(rec))
end

function ops.probe()
  local rec = load_one(args.index)
  record_probe(rec, args)
  dirty[args.index] = true
  save()
  return cjson.encode(public(rec))
end

-- `args.mine`, when given, restates this instance's own requests in flight (key index → count).
-- `args.asking` acquires of this instance may be ahead of this call without their answer
-- having reached it: a key may count up to that many more (they are not lost, only unseen).
function ops.snapshot()
  load_all()
  if args.mine ~= nil then
    local slack = args.asking or 0
    for i = 0, spec.n - 1 do
      local rec, low = record(i), args.mine[tostring(i)] or 0
      local had = rec.flights[me] or 0
      local n = math.min(math.max(had, low), low + slack)
      if n ~= had then
        rec.in_flight = rec.in_flight - had + n
        if n > 0 then rec.flights[me] = n else rec.flights[me] = nil end
        dirty[i] = true
      end
    end
  end
  save()
  refresh()  -- the heartbeat keeps a live provider's record from expiring
  local out = {}
  for i = 0, spec.n - 1 do out[i + 1] = public(record(i)) end
  local shared_until = meta.shared_until
  if shared_until ~= nil and now >= shared_until then shared_until = nil end
  return cjson.encode({keys = out, failures = meta.failures, opened_at = meta.opened_at,
                       trial = trial_held(), cursor = meta.cursor, latency_ewma = meta.latency_ewma,
                       shared_until = shared_until})
end

-- After an outage: the budgets each instance spent alone, and the cooldowns it learned, join
-- the shared record, so the pool does not resume as if nothing had been sent meanwhile.
function ops.merge()
  load_all()
  for _, seen in ipairs(args.keys) do
    if seen.index < spec.n then
      local rec = record(seen.index)
      rec.tat_requests = math.max(rec.tat_requests, seen.tat_requests)
      rec.tat_tokens = math.max(rec.tat_tokens, seen.tat_tokens)
      if seen.cooldown_until ~= nil and seen.cooldown_until > now then
        cool_until(rec, seen.cooldown_until, seen.announced)
      end
      dirty[seen.index] = true
    end
  end
  save()
  return '{}'
end

-- Entry --------------------------------------------------------------------------------------

-- Decoded provider specs by their JSON: as a Redis function the library stays loaded between
-- calls, and an instance sends the same spec every time. A pure cache (the decode of the very
-- string sent), bounded so that specs of changed key lists cannot pile up.
local spec_cache, spec_cached = {}, 0

local function run(keys_in, argv)
  hash_key, instances_key = keys_in[1], keys_in[2]
  op, now, me = argv[1], tonumber(argv[3]), argv[4]
  local raw = argv[2]
  spec = spec_cache[raw]
  if spec == nil then
    if spec_cached >= 16 then spec_cache, spec_cached = {}, 0 end
    spec = cjson.decode(raw)
    spec_cache[raw], spec_cached = spec, spec_cached + 1
  end
  args = cjson.decode(argv[5])
  keys, packed, fetched, dirty, meta, meta_dirty = {}, {}, false, {}, nil, false
  alive_cache, stored_cursor, cursor_moved, pace_cache, created = {}, nil, false, {}, false
  return ops[op]()
end

