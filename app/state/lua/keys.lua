-- Part 2 of the shared key state script: what one attempt does to one key (and to the breaker).

-- learned.py: a key's own pace, the configured budgets with gaps filled by learned limits.
local pace_cache
local function pace_of(rec)
  if rec.learned_requests == nil and rec.learned_tokens == nil then return spec end
  local cached = pace_cache[rec]
  if cached ~= nil then return cached end
  local rpm, tpm = spec.rpm_value, spec.tpm_value
  -- an account-wide limit: what a key announced is the account's, shared by every key
  local split = 1
  if spec.shared == 'true' or meta.shared_seen then split = spec.n end
  if rpm == nil and rec.learned_requests ~= nil and rec.learned_requests_window ~= nil then
    rpm = rec.learned_requests * 60.0 / rec.learned_requests_window
    if split > 1 then rpm = rpm / split end
  end
  if tpm == nil and rec.learned_tokens ~= nil and rec.learned_tokens_window ~= nil then
    tpm = rec.learned_tokens * 60.0 / rec.learned_tokens_window
    if split > 1 then tpm = tpm / split end
  end
  local p = spec
  if rpm ~= spec.rpm_value or tpm ~= spec.tpm_value then
    p = {paced = true, rpm = rpm ~= nil and rpm ~= 0, tpm = tpm ~= nil and tpm ~= 0,
         request_interval = 0.0, request_tolerance = 0.0, token_burst = 0.0,
         token_interval = 0.0}
    -- the configured burst goes with the configured rate only; a learned rate is spaced
    if p.rpm and rpm == spec.rpm_value then
      p.request_interval, p.request_tolerance = spec.request_interval, spec.request_tolerance
    elseif p.rpm then
      p.request_interval = 60.0 / rpm * (1 + REQUEST_HEADROOM) * spec.share
    end
    if p.tpm then
      p.token_burst = tpm / spec.share / 60.0
      p.token_interval = 60.0 / (tpm / spec.share - p.token_burst)
    end
  end
  pace_cache[rec] = p
  return p
end

local function learn_one(rec, field, announced)
  if announced == nil then return end
  local limit, window = announced[1], announced[2]
  if window == nil or window == cjson.null then window = rec[field .. '_window'] end
  if window == nil then return end
  rec[field], rec[field .. '_window'] = limit, window
end

local function learn_into(rec, learned)
  learn_one(rec, 'learned_requests', learned.requests)
  learn_one(rec, 'learned_tokens', learned.tokens)
  pace_cache[rec] = nil
end

-- pacing.py ---------------------------------------------------------------------------------

local function slot_at(rec, tokens, p)
  local at = now
  if p.rpm then at = math.max(at, rec.tat_requests - p.request_tolerance) end
  if p.tpm then
    local room = p.token_burst - math.min(tokens, p.token_burst)
    at = math.max(at, rec.tat_tokens - room * p.token_interval)
  end
  return at
end

local function take(rec, tokens, at, p)
  if p.rpm then rec.tat_requests = math.max(rec.tat_requests, at) + p.request_interval end
  if p.tpm then rec.tat_tokens = math.max(rec.tat_tokens, at) + tokens * p.token_interval end
end

-- transitions.py ----------------------------------------------------------------------------

local function cool_until(rec, till, announced)
  if rec.state == RATE_LIMITED and (rec.cooldown_until or 0) > till then return end
  if rec.state == FAILED or rec.state == DISABLED then return end
  rec.state, rec.cooldown_until, rec.announced = RATE_LIMITED, till, announced
end

local function cool_down(rec, announced_s)
  if announced_s ~= nil then return cool_until(rec, now + announced_s, true) end
  local backoff = DEFAULT_COOLDOWN_S * 2 ^ math.max(0, rec.failures - 1)
  cool_until(rec, now + math.min(backoff, MAX_DEFAULT_COOLDOWN_S), false)
end

local function spend_budget(rec)
  if rec.budget_left == nil then return end
  local reset_at = rec.budget_reset_at
  if reset_at == nil or reset_at <= now then
    rec.budget_left, rec.budget_reset_at = nil, nil
    return
  end
  rec.budget_left = rec.budget_left - 1
  if rec.budget_left <= 0 then
    rec.budget_left = 0
    cool_down(rec, reset_at - now)
  end
end

local function record_start(rec, at)
  -- as transitions.record_start: a key that failed since it last answered keeps its quiet time
  local suspect = rec.failures > 0 and rec.health_factor < 1.0 and rec.quiet_since ~= nil
  if rec.in_flight == 0 and not suspect then rec.quiet_since = at end
  rec.in_flight = rec.in_flight + 1
  rec.flights[me] = (rec.flights[me] or 0) + 1
  rec.requests = rec.requests + 1
  if pace_of(rec).paced then return end
  if rec.state == RATE_LIMITED then rec.trial_until = at + TRIAL_HOLD_S end
  spend_budget(rec)
end

local function blend(previous, sample)
  if previous == nil then return sample end
  return previous + LATENCY_EWMA_WEIGHT * (sample - previous)
end

local function announced_cooling(rec)
  return rec.state == RATE_LIMITED and rec.announced and (rec.cooldown_until or 0) > now
end

local function fail(rec, auth)
  rec.state, rec.cooldown_until, rec.announced = FAILED, nil, false
  rec.trial_until, rec.auth_failed = nil, auth
end

local function reactivate(rec)
  rec.state, rec.cooldown_until, rec.announced, rec.trial_until = ACTIVE, nil, false, nil
  rec.failures, rec.auth_failed, rec.budget_left, rec.budget_reset_at = 0, false, nil, nil
  rec.health_factor = math.max(rec.health_factor, 0.5)
end

local function apply(rec, o, signal)
  if o.outcome == 'ok' then
    rec.failures = 0
    rec.health_factor = math.min(1.0, rec.health_factor * 2)
    if rec.state == RATE_LIMITED and not announced_cooling(rec) then
      rec.state, rec.cooldown_until, rec.announced = ACTIVE, nil, false
    end
  elseif o.outcome == 'rate_limited' then
    rec.failures = rec.failures + 1
    local announced = signal.retry_after
    if announced == nil then announced = signal.exhausted end
    cool_down(rec, announced)
  elseif o.outcome == 'auth_failed' then
    fail(rec, true)
  elseif o.outcome == 'quota_exceeded' then
    fail(rec, false)
  elseif o.provider_failure then
    rec.failures = rec.failures + 1
    rec.health_factor = math.max(MIN_HEALTH, rec.health_factor * 0.5)
    if rec.failures >= FAIL_AFTER_ERRORS then fail(rec, false) end
  end
end

local function learn_budget(rec, signal)
  if signal.remaining == nil or signal.reset == nil then return end
  rec.budget_left = math.max(0, signal.remaining - rec.in_flight)
  rec.budget_reset_at = now + signal.reset
end

local function record_outcome(rec, o)
  local mine = rec.flights[me] or 0
  if mine > 1 then rec.flights[me] = mine - 1 else rec.flights[me] = nil end
  if mine > 0 then rec.in_flight = rec.in_flight - 1 end
  rec.trial_until = nil
  if o.outcome == 'unused' then rec.requests = math.max(0, rec.requests - 1) end
  if o.key_failure then rec.errors = rec.errors + 1 end
  if not o.silent then rec.quiet_since = now end
  if o.outcome == 'ok' and o.latency ~= nil then rec.latency_ewma = blend(rec.latency_ewma, o.latency) end
  if rec.state == DISABLED or o.neutral then return end
  local signal = o.signal
  apply(rec, o, signal)
  learn_budget(rec, signal)
  if o.outcome == 'ok' and o.learn ~= nil then learn_into(rec, o.learn) end
  if o.outcome == 'ok' and signal.exhausted ~= nil and signal.exhausted > 0 then
    cool_down(rec, signal.exhausted)
  end
end

local function record_probe(rec, a)
  if rec.state == DISABLED then return end
  if a.auth_failed then return fail(rec, true) end
  if not a.ok then return end
  if (rec.state == FAILED or rec.state == RATE_LIMITED) and not announced_cooling(rec) then
    reactivate(rec)
  end
end

-- breaker.py (the half-open trial is a lease, so a crashed instance cannot hold it forever) ---

local function trial_held()
  return meta.trial_at ~= nil and now - meta.trial_at < TRIAL_LEASE_S
end

local function breaker_allow()
  if meta.opened_at == nil then return true end
  if now - meta.opened_at >= spec.reset and not trial_held() then
    meta.trial_at, meta_dirty = now, true
    return true
  end
  return false
end

local function breaker_record(o)
  if o.outcome == 'ok' then
    meta.failures, meta.opened_at = 0, nil
  elseif o.provider_failure then
    meta.failures = meta.failures + 1
    local reopening = meta.opened_at ~= nil and trial_held()
    if reopening or meta.failures >= spec.threshold then meta.opened_at = now end
  end
  meta.trial_at, meta_dirty = nil, true
end

-- stall.py and strategies.py ----------------------------------------------------------------

local function stalled(index)
  local rec = record(index)
  if rec.in_flight == 0 or rec.quiet_since == nil then return false end
  local typical = rec.latency_ewma or meta.latency_ewma
  if typical == nil then return false end
  return now - rec.quiet_since > math.max(STALL_FLOOR_S, STALL_FACTOR * typical)
end

local function next_in_rotation(candidates)
  for _, index in ipairs(candidates) do
    if index >= meta.cursor then return index end
  end
  return candidates[1]
end

local function fewest_in_flight(candidates)
  local fewest, out = math.huge, {}
  for _, i in ipairs(candidates) do fewest = math.min(fewest, record(i).in_flight) end
  for _, i in ipairs(candidates) do if record(i).in_flight == fewest then out[#out + 1] = i end end
  return out
end

local function weighted(candidates, u)
  local scores, total = {}, 0
  for k, i in ipairs(candidates) do
    scores[k] = (spec.weights[i + 1] or 1.0) * record(i).health_factor
    total = total + scores[k]
  end
  if total <= 0 then return next_in_rotation(candidates) end
  local x, acc = u * total, 0
  for k, i in ipairs(candidates) do
    acc = acc + scores[k]
    if x < acc then return i end
  end
  return candidates[#candidates]
end

local function strategy_pick(candidates, u)
  if spec.strategy == 'random' then return candidates[math.floor(u * #candidates) + 1] end
  if spec.strategy == 'weighted' then return weighted(candidates, u) end
  if spec.strategy == 'least_busy' then return next_in_rotation(fewest_in_flight(candidates)) end
  return next_in_rotation(candidates)
end

