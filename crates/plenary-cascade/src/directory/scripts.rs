//! Lua run inside Redis so that reading liveness and removing a dead node's entries is one
//! atomic step: two nodes sweeping at once, or a node beating while another sweeps, cannot
//! leave half-removed entries or remove a node that just came back.
//!
//! Keys are built from the prefix in ARGV[1] rather than passed as KEYS, because which keys a
//! removal touches depends on the node's rooms set. Fine on one Redis or Valkey; Redis Cluster
//! is not supported.

use std::sync::LazyLock;

use redis::Script;

const PRELUDE: &str = r#"
local p = ARGV[1]
local function node_key(n) return p .. ':node:' .. n end
local function remove(n, only_dead)
  local nk = node_key(n)
  if only_dead and redis.call('EXISTS', nk) == 1 then return false end
  local rk = nk .. ':rooms'
  for _, room in ipairs(redis.call('SMEMBERS', rk)) do
    redis.call('SREM', p .. ':room:' .. room .. ':nodes', n)
    local tk = p .. ':room:' .. room .. ':tracks'
    local kv = redis.call('HGETALL', tk)
    for i = 1, #kv, 2 do
      if kv[i + 1] == n then redis.call('HDEL', tk, kv[i]) end
    end
  end
  redis.call('DEL', nk, rk)
  redis.call('SREM', p .. ':nodes', n)
  return true
end
local function live(set)
  local out = {}
  for _, n in ipairs(redis.call('SMEMBERS', set)) do
    local v = redis.call('GET', node_key(n))
    if v then out[#out + 1] = v else remove(n, true) end
  end
  return out
end
"#;

pub(super) struct Scripts {
    /// ARGV: prefix. Returns the JSON of every live node.
    pub nodes: Script,
    /// ARGV: prefix, room, me. Nil when `me` has no live heartbeat, else the room's live JSONs.
    pub join: Script,
    /// ARGV: prefix, room. The room's live JSONs.
    pub room: Script,
    /// ARGV: prefix, room, me.
    pub leave: Script,
    /// ARGV: prefix, room, track. The owner when it is alive, else nil.
    pub owner: Script,
    /// ARGV: prefix, name.
    pub remove: Script,
    /// ARGV: prefix. Names of the dead nodes removed.
    pub sweep: Script,
}

fn with_prelude(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{body}"))
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    nodes: with_prelude("return live(p .. ':nodes')"),
    join: with_prelude(
        r#"
local room, me = ARGV[2], ARGV[3]
if redis.call('EXISTS', node_key(me)) == 0 then return false end
redis.call('SADD', p .. ':room:' .. room .. ':nodes', me)
redis.call('SADD', node_key(me) .. ':rooms', room)
return live(p .. ':room:' .. room .. ':nodes')
"#,
    ),
    room: with_prelude("return live(p .. ':room:' .. ARGV[2] .. ':nodes')"),
    leave: with_prelude(
        r#"
local room, me = ARGV[2], ARGV[3]
redis.call('SREM', p .. ':room:' .. room .. ':nodes', me)
redis.call('SREM', node_key(me) .. ':rooms', room)
local tk = p .. ':room:' .. room .. ':tracks'
local kv = redis.call('HGETALL', tk)
for i = 1, #kv, 2 do
  if kv[i + 1] == me then redis.call('HDEL', tk, kv[i]) end
end
return 1
"#,
    ),
    owner: with_prelude(
        r#"
local o = redis.call('HGET', p .. ':room:' .. ARGV[2] .. ':tracks', ARGV[3])
if not o then return false end
if redis.call('EXISTS', node_key(o)) == 1 then return o end
remove(o, true)
return false
"#,
    ),
    remove: with_prelude("remove(ARGV[2], false) return 1"),
    sweep: with_prelude(
        r#"
local gone = {}
for _, n in ipairs(redis.call('SMEMBERS', p .. ':nodes')) do
  if remove(n, true) then gone[#gone + 1] = n end
end
return gone
"#,
    ),
});
