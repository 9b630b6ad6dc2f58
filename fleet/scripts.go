package fleet

import (
	"fmt"
	"strings"
	"time"

	"github.com/mailban/mailban/rules"
)

// Times inside the scripts. Redis runs Lua 5.1, whose numbers are doubles:
// Unix nanoseconds (about 1.8e18) do not fit their 53 bits. So a time is a
// pair {high 32 bits, low 32 bits} of the int64, stored as 8 big-endian
// bytes (struct '>I4I4'), and the scripts only compare pairs and add or
// subtract durations, which stays exact.
const luaPrelude = `
local B32 = 4294967296
local MAXT = {2147483647, 4294967295}
local function T(s, pos) local h, l, n = struct.unpack('>I4I4', s, pos); return {h, l}, n end
local function P(x) return struct.pack('>I4I4', x[1], x[2]) end
local function lt(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
local function add(a, d)
  local h, l = a[1] + d[1], a[2] + d[2]
  if l >= B32 then l = l - B32; h = h + 1 end
  return {h, l}
end
local function sub(a, d)
  local h, l = a[1] - d[1], a[2] - d[2]
  if l < 0 then l = l + B32; h = h - 1 end
  return {h, l}
end
local function tmax(a, b) if lt(a, b) then return b end return a end
local function iszero(a) return a[1] == 0 and a[2] == 0 end
-- milliseconds from now until t, plus the grace period; nil: never
local function ttl(t, now)
  if t == nil then return nil end
  local ms = math.floor(((t[1] - now[1]) * B32 + (t[2] - now[2])) / 1000000)
  if ms < 0 then ms = 0 end
  return ms + GRACE
end

-- Address group state: window times, then remembered ban ends.
local function decodeA(v)
  local a = {times = {}, ends = {}}
  if not v then return a end
  local n, pos = struct.unpack('>I2', v, 2)
  for i = 1, n do a.times[i], pos = T(v, pos) end
  local m
  m, pos = struct.unpack('>I2', v, pos)
  for i = 1, m do a.ends[i], pos = T(v, pos) end
  return a
end
local function saveA(key, a, now)
  if #a.times == 0 and #a.ends == 0 then redis.call('DEL', key); return end
  local parts = {struct.pack('>BI2', 1, #a.times)}
  for i = 1, #a.times do parts[#parts + 1] = P(a.times[i]) end
  parts[#parts + 1] = struct.pack('>I2', #a.ends)
  for i = 1, #a.ends do parts[#parts + 1] = P(a.ends[i]) end
  local exp = nil
  if #a.times > 0 then exp = add(a.times[#a.times], IPP) end
  local permanent = false
  if #a.ends > 0 then
    local last = a.ends[#a.ends]
    if last[1] == MAXT[1] and last[2] == MAXT[2] then permanent = true
    else
      local e = add(last, OFFMEM)
      if exp == nil or lt(exp, e) then exp = e end
    end
  end
  if permanent then
    redis.call('SET', key, table.concat(parts))
  else
    redis.call('SET', key, table.concat(parts), 'PX', ttl(exp, now))
  end
end

-- Login state: window times, lock end, successes (group, time), newest first.
local function decodeL(v)
  local l = {times = {}, locked = {0, 0}, succ = {}, exists = v ~= false and v ~= nil}
  if not v then return l end
  local n, pos = struct.unpack('>I2', v, 2)
  for i = 1, n do l.times[i], pos = T(v, pos) end
  l.locked, pos = T(v, pos)
  local s
  s, pos = struct.unpack('>B', v, pos)
  for i = 1, s do
    local g = string.sub(v, pos, pos + 15)
    local t
    t, pos = T(v, pos + 16)
    l.succ[i] = {g, t}
  end
  return l
end
local function saveL(key, l, now)
  if #l.times == 0 and iszero(l.locked) and #l.succ == 0 then redis.call('DEL', key); return end
  local parts = {struct.pack('>BI2', 1, #l.times)}
  for i = 1, #l.times do parts[#parts + 1] = P(l.times[i]) end
  parts[#parts + 1] = P(l.locked)
  parts[#parts + 1] = struct.pack('>B', #l.succ)
  for i = 1, #l.succ do parts[#parts + 1] = l.succ[i][1] .. P(l.succ[i][2]) end
  local exp = l.locked
  if #l.times > 0 then exp = tmax(exp, add(l.times[#l.times], LGP)) end
  if #l.succ > 0 then exp = tmax(exp, add(l.succ[1][2], SUCCMEM)) end
  redis.call('SET', key, table.concat(parts), 'PX', ttl(exp, now))
end

-- trim drops the times that no longer count at ref.
local function trim(times, ref, period)
  local cut = sub(ref, period)
  local i = 1
  while i <= #times and not lt(cut, times[i]) do i = i + 1 end
  if i > 1 then
    local kept = {}
    for j = i, #times do kept[#kept + 1] = times[j] end
    return kept
  end
  return times
end
-- insert adds t in order; a list full at keep loses its oldest.
local function insert(times, t, keep)
  if #times >= keep then table.remove(times, 1) end
  local i = #times
  while i > 0 and lt(t, times[i]) do i = i - 1 end
  table.insert(times, i + 1, t)
end

-- Decisions: a hold in the holds hash (with an expiry index) and an
-- entry in the stream that every host reads.
local function announce(field, value, untilms)
  if untilms ~= nil then
    redis.call('HSET', K_HOLDS, field, value)
    redis.call('ZADD', K_EXP, untilms, field)
  else
    redis.call('HDEL', K_HOLDS, field)
    redis.call('ZREM', K_EXP, field)
  end
  redis.call('XADD', K_STREAM, 'MAXLEN', '~', STREAMLEN, '*', 'f', field, 'v', value)
end
local function ms(t)
  if t[1] == MAXT[1] and t[2] == MAXT[2] then return 'inf' end
  return string.format('%.0f', math.floor((t[1] * B32 + t[2]) / 1000000))
end
-- holdValue is decodeHold's layout (store.go).
local function holdValue(action, at, untilt, kind, count, prev, text)
  return struct.pack('>BB', 1, action) .. P(at) .. P(untilt) .. struct.pack('>BI4I2I2', kind, count, prev, #HOST) .. HOST ..
    struct.pack('>I2', #text) .. text .. struct.pack('>I2', 0)
end

-- ban records an offence of the group at t and returns the ban's end and
-- the offences remembered before it.
local function ban(a, t)
  local ends, i = a.ends, 1
  local cut = sub(t, OFFMEM)
  while i <= #ends and not lt(cut, ends[i]) do i = i + 1 end
  local kept = {}
  for j = i, #ends do kept[#kept + 1] = ends[j] end
  local prev = #kept
  local e
  if PERM > 0 and prev + 1 >= PERM then e = MAXT
  else e = add(t, LEN[math.min(prev + 1, #LEN)]) end
  local k = #kept
  while k > 0 and lt(e, kept[k]) do k = k - 1 end
  table.insert(kept, k + 1, e)
  if #kept > MAXREM then table.remove(kept, 1) end
  a.ends = kept
  a.times = {}
  return e, prev
end
`

// luaTally tallies a burst. KEYS: holds, expiry index, stream, the host's
// burst marker, the host's read positions, then every address and login
// key of the burst. ARGV[1]: now; ARGV[3]: the burst's mark, kept in the
// marker so that a host that lost the reply can tell whether the burst was
// applied; ARGV[4] on: fields and values of read positions, stored with
// the counts they produced; ARGV[2]: the ops,
// 34 bytes each (opLen): kind, flags (1 refused, 2 address, 4 login), time,
// attempts, the index in KEYS of the address and login keys, the 16-byte
// address group. It returns the outcomes, outcomeLen bytes each.
const luaTally = `
local now = T(ARGV[1], 1)
local ops = ARGV[2]
redis.call('SET', KEYS[4], ARGV[3], 'PX', 86400000)
if #ARGV >= 5 then redis.call('HSET', KEYS[5], unpack(ARGV, 4)) end
local out = {}
local A, L = {}, {}
local function getA(i) if not A[i] then A[i] = decodeA(redis.call('GET', KEYS[i])) end return A[i] end
local function getL(i) if not L[i] then L[i] = decodeL(redis.call('GET', KEYS[i])) end return L[i] end
local dirtyA, dirtyL = {}, {}
local pos = 1
while pos <= #ops do
  local kind, flags, th, tl, attempts, ai, li = struct.unpack('>BBI4I4I4I2I2', ops, pos)
  local grp = string.sub(ops, pos + 18, pos + 33)
  pos = pos + 34
  local t = {th, tl}
  local f, lc, lref, lockuntil, ac, aref, bprev, buntil = 0, 0, {0, 0}, {0, 0}, 0, {0, 0}, 0, {0, 0}
  if kind == 2 then
    -- a success: remembered per login, newest first, at most MAXSUCC
    local l = getL(li)
    local ts = t
    for i = 1, #l.succ do
      if l.succ[i][1] == grp then ts = tmax(ts, l.succ[i][2]); table.remove(l.succ, i); break end
    end
    local i = 1
    while i <= #l.succ and lt(ts, l.succ[i][2]) do i = i + 1 end
    if i <= MAXSUCC then
      if #l.succ >= MAXSUCC then table.remove(l.succ) end
      table.insert(l.succ, i, {grp, ts})
    end
    l.exists = true
    dirtyL[li] = true
  else
    local haveAddr, haveLogin = (flags % 4) >= 2, (flags % 8) >= 4
    local refused = (flags % 2) == 1
    local a
    if haveAddr then
      a = getA(ai)
      if not refused and #a.ends > 0 and lt(t, a.ends[#a.ends]) then refused = true; f = f + 1 end
    end
    local l, countLogin, lockBan = nil, false, false
    if haveLogin then
      l = getL(li)
      local exempt = false
      if haveAddr and l.exists then
        local cut = sub(t, SUCCMEM)
        for i = 1, #l.succ do
          if l.succ[i][1] == grp and lt(cut, l.succ[i][2]) then exempt = true; break end
        end
      end
      if not l.exists then
        countLogin, lref = true, t
      elseif exempt then
      elseif lt(t, l.locked) then
        lockBan = haveAddr and not refused
      else
        lref = t
        if #l.times > 0 then lref = tmax(t, l.times[#l.times]) end
        l.times = trim(l.times, lref, LGP)
        countLogin = lt(sub(lref, LGP), t)
      end
    end
    local countAddr = false
    if haveAddr and not refused and (IPC > 0 or lockBan) then
      aref = t
      if #a.times > 0 then aref = tmax(t, a.times[#a.times]) end
      if IPC > 0 then
        a.times = trim(a.times, aref, IPP)
        countAddr = lt(sub(aref, IPP), t)
      end
    end
    if countLogin then
      f = f + 2
      lc = #l.times + attempts
      if lc >= LGC then
        f = f + 4
        lockuntil = add(t, LOCKFOR)
        l.locked = tmax(l.locked, lockuntil)
        l.times = {}
        if lt(now, lockuntil) then
          local login = string.sub(KEYS[li], #LPREFIX + 1)
          announce('l:' .. login, holdValue(LOCK, t, lockuntil, KIND_LOCK, lc, 0, ''), ms(lockuntil))
        end
      else
        for _ = 1, attempts do insert(l.times, t, LGC - 1) end
      end
      l.exists = true
      dirtyL[li] = true
    end
    local banned, bkind = false, 0
    if lockBan then
      f = f + 8
      banned, bkind = true, KIND_LOCKBAN
    elseif countAddr then
      f = f + 16
      ac = #a.times + attempts
      if ac >= IPC then banned, bkind = true, KIND_IP
      else
        for _ = 1, attempts do insert(a.times, t, IPC - 1) end
        dirtyA[ai] = true
      end
    end
    if banned then
      f = f + 32
      buntil, bprev = ban(a, t)
      dirtyA[ai] = true
      local permanent = buntil[1] == MAXT[1] and buntil[2] == MAXT[2]
      if permanent or lt(now, buntil) then
        local text = ''
        if bkind == KIND_LOCKBAN then text = string.sub(KEYS[li], #LPREFIX + 1) end
        local u = buntil
        if permanent then u = {0, 0} end
        announce('b:' .. string.sub(KEYS[ai], #APREFIX + 1), holdValue(BAN, t, u, bkind, ac, bprev, text), ms(buntil))
      end
      if permanent then buntil = {0, 0} end
    end
  end
  out[#out + 1] = struct.pack('>BI4', f, lc) .. P(lref) .. P(lockuntil) .. struct.pack('>I4', ac) .. P(aref) ..
    struct.pack('>I2', bprev) .. P(buntil)
end
for i in pairs(dirtyA) do saveA(KEYS[i], A[i], now) end
for i in pairs(dirtyL) do saveL(KEYS[i], L[i], now) end
return table.concat(out)
`

// luaPublish records decisions made outside a tally, and the evidence of
// those a tally made. KEYS: holds, expiry index, stream, then the state key
// of each announcement (or the holds key when it has none). ARGV[1]: now;
// then per announcement four values: the holds field, the hold value,
// flags (1: an offence; 2: only the value's evidence, for the hold this
// host's tally made with the same action, start and end), the index of its
// state key in KEYS.
const luaPublish = `
-- where a hold value's evidence starts: after the host and the text
local function evidenceAt(v)
  local n, pos = struct.unpack('>I2', v, 26)
  n, pos = struct.unpack('>I2', v, pos + n)
  return pos + n
end
local now = T(ARGV[1], 1)
for j = 2, #ARGV, 4 do
  local field, value, flags, ki = ARGV[j], ARGV[j + 1], tonumber(ARGV[j + 2]), tonumber(ARGV[j + 3])
  local action = struct.unpack('>B', value, 2)
  if flags >= 2 then
    -- Evidence only: the hold keeps its kind, counts and text; nothing is
    -- counted, and a hold lifted or replaced meanwhile is left alone.
    local held = redis.call('HGET', K_HOLDS, field)
    if held and string.sub(held, 1, 18) == string.sub(value, 1, 18) and
        string.sub(held, 26, 27 + #HOST) == struct.pack('>I2', #HOST) .. HOST then
      local v = string.sub(held, 1, evidenceAt(held) - 1) .. string.sub(value, evidenceAt(value))
      if v ~= held then
        redis.call('HSET', K_HOLDS, field, v)
        redis.call('XADD', K_STREAM, 'MAXLEN', '~', STREAMLEN, '*', 'f', field, 'v', v)
      end
    end
    action = 0
  end
  local at = T(value, 3)
  local untilt = T(value, 11)
  local permanent = iszero(untilt)
  if permanent then untilt = MAXT end
  if action == BAN then
    if flags % 2 == 1 and ki > 3 then
      -- an offence, unless the fleet already holds an automatic ban on it
      local held = redis.call('HGET', K_HOLDS, field)
      local fresh = true
      if held then
        local hu = T(held, 11)
        local hkind = struct.unpack('>B', held, 19)
        if hkind ~= 0 and (iszero(hu) or lt(now, hu)) then fresh = false end
      end
      if fresh then
        local a = decodeA(redis.call('GET', KEYS[ki]))
        local cut = sub(at, OFFMEM)
        local kept = {}
        for i = 1, #a.ends do if lt(cut, a.ends[i]) then kept[#kept + 1] = a.ends[i] end end
        local k = #kept
        while k > 0 and lt(untilt, kept[k]) do k = k - 1 end
        table.insert(kept, k + 1, untilt)
        if #kept > MAXREM then table.remove(kept, 1) end
        a.ends, a.times = kept, {}
        saveA(KEYS[ki], a, now)
      end
    end
    announce(field, value, ms(untilt))
  elseif action == UNBAN then
    if ki > 3 then
      local a = decodeA(redis.call('GET', KEYS[ki]))
      a.ends = {}
      saveA(KEYS[ki], a, now)
    end
    announce(field, value, nil)
  elseif action == LOCK then
    if ki > 3 then
      local l = decodeL(redis.call('GET', KEYS[ki]))
      l.locked = tmax(l.locked, untilt)
      l.times = {}
      saveL(KEYS[ki], l, now)
    end
    announce(field, value, ms(untilt))
  elseif action == UNLOCK then
    if ki > 3 then
      local l = decodeL(redis.call('GET', KEYS[ki]))
      if l.exists then l.locked = {0, 0}; saveL(KEYS[ki], l, now) end
    end
    announce(field, value, nil)
  elseif action == BLOCK then
    announce(field, value, 'inf')
  elseif action == UNBLOCK then
    announce(field, value, nil)
  end
end
return #ARGV
`

// luaCatchUp returns the fleet's epoch (making one from ARGV[1] if Redis
// has none: it is new or lost its data), the stream's last entry ID, and
// every hold. KEYS: epoch, stream, holds.
const luaCatchUp = `
local epoch = redis.call('GET', KEYS[1])
if not epoch then redis.call('SET', KEYS[1], ARGV[1]); epoch = ARGV[1] end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {epoch, id, redis.call('HGETALL', KEYS[3])}
`

// luaPrune forgets holds that have run out by ARGV[1] (Unix milliseconds),
// at most ARGV[2] of them. KEYS: holds, expiry index.
const luaPrune = `
local done = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for i = 1, #done do
  redis.call('HDEL', KEYS[1], done[i])
  redis.call('ZREM', KEYS[2], done[i])
end
return #done
`

// Sizes of the packed ops and outcomes.
const (
	opLen      = 34
	outcomeLen = 1 + 4 + 8 + 8 + 4 + 8 + 2 + 8
)

// Kinds of decisions a script makes; 0 is one made in Go, whose reason is
// in the hold.
const (
	kindManual  = 0
	kindIP      = 1 // an address's threshold; count is its failures
	kindLockBan = 2 // a failure against a locked login; the text is the login
	kindLock    = 3 // a login's threshold; count is its failures
	kindAuto    = 4 // made in Go from failures (a host alone, or announced again); the reason is in the hold
)

// graceMillis keeps a key a while after its last time has stopped
// counting, as the engine's Expire (every few seconds) does for its own.
const graceMillis = 60_000

// buildScript writes the constants a configuration gives the scripts
// before the prelude and body. A different configuration is a different
// script (and SHA), so hosts in the middle of a reload do not mix.
func buildScript(cfg rules.Config, k keys, host, body string) string {
	var b strings.Builder
	dur := func(name string, d time.Duration) {
		n := uint64(max(d, 0))
		fmt.Fprintf(&b, "local %s = {%d, %d}\n", name, n>>32, n&0xffffffff)
	}
	fmt.Fprintf(&b, "local K_HOLDS, K_EXP, K_STREAM = %q, %q, %q\n", k.holds, k.holdsExp, k.stream)
	fmt.Fprintf(&b, "local APREFIX, LPREFIX = %q, %q\n", k.addrPrefix, k.loginPrefix)
	fmt.Fprintf(&b, "local HOST = %q\n", host)
	fmt.Fprintf(&b, "local IPC, LGC = %d, %d\n", cfg.IP.Count, cfg.Login.Count)
	dur("IPP", cfg.IP.Period)
	dur("LGP", cfg.Login.Period)
	dur("LOCKFOR", cfg.LockFor)
	dur("SUCCMEM", cfg.SuccessMemory)
	dur("OFFMEM", cfg.OffenderMemory)
	fmt.Fprintf(&b, "local PERM, MAXREM, MAXSUCC, STREAMLEN, GRACE = %d, %d, %d, %d, %d\n",
		cfg.PermanentAfter, rules.MaxRemembered, maxSuccesses, streamLength, graceMillis)
	fmt.Fprintf(&b, "local BAN, UNBAN, BLOCK, UNBLOCK, LOCK, UNLOCK = %d, %d, %d, %d, %d, %d\n",
		rules.Ban, rules.Unban, rules.Block, rules.Unblock, rules.Lock, rules.Unlock)
	fmt.Fprintf(&b, "local KIND_IP, KIND_LOCKBAN, KIND_LOCK = %d, %d, %d\n", kindIP, kindLockBan, kindLock)
	// Ban lengths by offences remembered before, up to where they stop
	// growing; computed by the engine's own code so that both agree.
	b.WriteString("local LEN = {")
	var last time.Duration = -1
	final, _ := cfg.BanLength(rules.MaxRemembered - 1)
	for prev := range rules.MaxRemembered {
		l, permanent := cfg.BanLength(prev)
		if permanent || (l == last && l == final) {
			break
		}
		n := uint64(l)
		fmt.Fprintf(&b, "{%d, %d}, ", n>>32, n&0xffffffff)
		last = l
	}
	if last < 0 {
		b.WriteString("{0, 0}")
	}
	b.WriteString("}\n")
	b.WriteString(luaPrelude)
	b.WriteString(body)
	return b.String()
}

// maxSuccesses is the engine's bound on successes remembered per login.
const maxSuccesses = 8

// streamLength is about how many decisions the stream keeps: a host that
// was away for fewer reads what it missed, others catch up from the holds.
const streamLength = 100_000
