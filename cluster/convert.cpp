#include "cluster/convert.hpp"

#include <kj/debug.h>

#include <memory>

namespace bifrost::cluster {

// -- ops and results ----------------------------------------------------------------------------

namespace {

rpc::OpKind to_rpc(storage::op_kind k) {
  switch (k) {
    case storage::op_kind::get: return rpc::OpKind::GET;
    case storage::op_kind::store: return rpc::OpKind::STORE;
    case storage::op_kind::remove: return rpc::OpKind::REMOVE;
    case storage::op_kind::arith: return rpc::OpKind::ARITH;
    case storage::op_kind::touch: return rpc::OpKind::TOUCH;
    case storage::op_kind::flush: return rpc::OpKind::FLUSH;
  }
  return rpc::OpKind::GET;
}

storage::op_kind from_rpc(rpc::OpKind k) {
  switch (k) {
    case rpc::OpKind::GET: return storage::op_kind::get;
    case rpc::OpKind::STORE: return storage::op_kind::store;
    case rpc::OpKind::REMOVE: return storage::op_kind::remove;
    case rpc::OpKind::ARITH: return storage::op_kind::arith;
    case rpc::OpKind::TOUCH: return storage::op_kind::touch;
    case rpc::OpKind::FLUSH: return storage::op_kind::flush;
  }
  KJ_FAIL_REQUIRE("unknown op kind", static_cast<uint16_t>(k));
}

rpc::StoreMode to_rpc(storage::store_mode m) {
  switch (m) {
    case storage::store_mode::set: return rpc::StoreMode::SET;
    case storage::store_mode::add: return rpc::StoreMode::ADD;
    case storage::store_mode::replace: return rpc::StoreMode::REPLACE;
    case storage::store_mode::append: return rpc::StoreMode::APPEND;
    case storage::store_mode::prepend: return rpc::StoreMode::PREPEND;
    case storage::store_mode::cas: return rpc::StoreMode::CAS;
  }
  return rpc::StoreMode::SET;
}

storage::store_mode from_rpc(rpc::StoreMode m) {
  switch (m) {
    case rpc::StoreMode::SET: return storage::store_mode::set;
    case rpc::StoreMode::ADD: return storage::store_mode::add;
    case rpc::StoreMode::REPLACE: return storage::store_mode::replace;
    case rpc::StoreMode::APPEND: return storage::store_mode::append;
    case rpc::StoreMode::PREPEND: return storage::store_mode::prepend;
    case rpc::StoreMode::CAS: return storage::store_mode::cas;
  }
  KJ_FAIL_REQUIRE("unknown store mode", static_cast<uint16_t>(m));
}

} // namespace

rpc::Status to_rpc(storage::status s) {
  switch (s) {
    case storage::status::hit: return rpc::Status::HIT;
    case storage::status::miss: return rpc::Status::MISS;
    case storage::status::stored: return rpc::Status::STORED;
    case storage::status::not_stored: return rpc::Status::NOT_STORED;
    case storage::status::exists: return rpc::Status::EXISTS;
    case storage::status::not_found: return rpc::Status::NOT_FOUND;
    case storage::status::deleted: return rpc::Status::DELETED;
    case storage::status::too_large: return rpc::Status::TOO_LARGE;
    case storage::status::no_memory: return rpc::Status::NO_MEMORY;
    case storage::status::non_numeric: return rpc::Status::NON_NUMERIC;
    case storage::status::ok: return rpc::Status::OK;
    case storage::status::unavailable: return rpc::Status::UNAVAILABLE;
    case storage::status::not_sent: return rpc::Status::UNAVAILABLE;  // never crosses nodes
  }
  return rpc::Status::UNAVAILABLE;
}

storage::status from_rpc(rpc::Status s) {
  switch (s) {
    case rpc::Status::HIT: return storage::status::hit;
    case rpc::Status::MISS: return storage::status::miss;
    case rpc::Status::STORED: return storage::status::stored;
    case rpc::Status::NOT_STORED: return storage::status::not_stored;
    case rpc::Status::EXISTS: return storage::status::exists;
    case rpc::Status::NOT_FOUND: return storage::status::not_found;
    case rpc::Status::DELETED: return storage::status::deleted;
    case rpc::Status::TOO_LARGE: return storage::status::too_large;
    case rpc::Status::NO_MEMORY: return storage::status::no_memory;
    case rpc::Status::NON_NUMERIC: return storage::status::non_numeric;
    case rpc::Status::OK: return storage::status::ok;
    case rpc::Status::UNAVAILABLE: return storage::status::unavailable;
  }
  return storage::status::unavailable;  // a newer peer's status: treat as a failure
}

void to_rpc(const storage::op& o, rpc::Op::Builder b, bool with_value) {
  b.setKind(to_rpc(o.kind));
  b.setKey(as_data(o.key));
  if (with_value)
    b.setValue(as_data(o.value));
  b.setMode(to_rpc(o.mode));
  b.setFlags(o.flags);
  b.setTtl(o.ttl);
  b.setCompareCas(o.compare_cas);
  b.setCasGiven(o.cas_given);
  b.setInvalidate(o.invalidate);
  b.setExplicitCas(o.explicit_cas);
  b.setAsStale(o.as_stale);
  b.setAsFetched(o.as_fetched);
  b.setTokenOut(o.token_out);
  b.setCopy(o.copy);
  b.setGetValue(o.get_value);
  b.setGetTouch(o.get_touch);
  b.setGetBump(o.get_bump);
  b.setVivify(o.vivify);
  b.setVivifyTtl(o.vivify_ttl);
  b.setRecache(o.recache);
  b.setRecacheTtl(o.recache_ttl);
  b.setRecacheBeforeTouch(o.recache_before_touch);
  b.setKeepToken(o.keep_token);
  b.setHandBack(o.hand_back);
  b.setParked(o.parked);
  b.setRouted(o.routed);
  b.setIncr(o.incr);
  b.setDelta(o.delta);
  b.setInitial(o.initial);
  b.setCounts(static_cast<uint8_t>(o.counts));
}

storage::op from_rpc(rpc::Op::Reader r) {
  storage::op o;
  o.kind = from_rpc(r.getKind());
  o.key = to_string(r.getKey());
  o.value = to_string(r.getValue());
  o.mode = from_rpc(r.getMode());
  o.flags = r.getFlags();
  o.ttl = r.getTtl();
  o.compare_cas = r.getCompareCas();
  o.cas_given = r.getCasGiven();
  o.invalidate = r.getInvalidate();
  o.explicit_cas = r.getExplicitCas();
  o.as_stale = r.getAsStale();
  o.as_fetched = r.getAsFetched();
  o.token_out = r.getTokenOut();
  o.copy = r.getCopy();
  o.get_value = r.getGetValue();
  o.get_touch = r.getGetTouch();
  o.get_bump = r.getGetBump();
  o.vivify = r.getVivify();
  o.vivify_ttl = r.getVivifyTtl();
  o.recache = r.getRecache();
  o.hand_back = r.getHandBack();
  o.parked = r.getParked();
  o.routed = r.getRouted();
  o.recache_ttl = r.getRecacheTtl();
  o.recache_before_touch = r.getRecacheBeforeTouch();
  o.keep_token = r.getKeepToken();
  o.incr = r.getIncr();
  o.delta = r.getDelta();
  o.initial = r.getInitial();
  const uint8_t counts = r.getCounts();
  o.counts = counts <= uint8_t(storage::op::counting::touch_or_miss)
               ? static_cast<storage::op::counting>(counts)
               : storage::op::counting::as_kind;
  return o;
}

namespace {
constexpr uint64_t words(size_t bytes) {
  return (bytes + 7) / 8;
}
} // namespace

capnp::MessageSize results_size(const storage::result_batch& rs) {
  uint64_t w = 16;
  for (auto& r : rs) {
    w += capnp::sizeInWords<rpc::Result>();
    if (r.value && r.value.size() <= inline_value_limit)
      w += words(r.value.size());
  }
  return {w, 1};
}

capnp::MessageSize ops_size(const storage::op_batch& ops) {
  uint64_t w = 16;
  for (auto& o : ops)
    w += capnp::sizeInWords<rpc::Op>() + words(o.key.size()) + words(o.value.size()) + 1;
  return {w, 1};
}

void mark_warm(storage::op_batch& ops) {
  for (auto& o : ops) {
    o.counted = false;
    if (o.kind == storage::op_kind::get)
      o.get_bump = false;
  }
}

storage::op_batch from_rpc(capnp::List<rpc::Op>::Reader list) {
  KJ_REQUIRE(list.size() <= call_max_ops, "too many ops in one call", list.size());
  storage::op_batch ops;
  ops.reserve(list.size());
  for (auto o : list)
    ops.push_back(from_rpc(o));
  return ops;
}

void to_rpc_meta(const storage::result& r, rpc::Result::Builder b) {
  b.setStatus(to_rpc(r.st));
  b.setFlags(r.flags);
  b.setCas(r.cas);
  b.setExptime(r.exptime);
  b.setExptimeBefore(r.exptime_before);
  b.setExptimeBeforeSet(true);
  b.setLastAccess(r.last_access);
  b.setFetched(r.fetched);
  b.setWin(r.win);
  b.setStale(r.stale);
  b.setAlreadyWon(r.already_won);
  b.setValueSize(r.value ? r.value.size() : r.value_size);
  b.setNumber(r.number);
  b.setParked(r.parked);
  b.setDeletedLately(r.deleted_lately);
  b.setDeletedCas(r.deleted_cas);
}

storage::result from_rpc(rpc::Result::Reader r) {
  storage::result x;
  x.st = from_rpc(r.getStatus());
  x.flags = r.getFlags();
  x.cas = r.getCas();
  x.exptime = r.getExptime();
  x.exptime_before = r.getExptimeBeforeSet() ? r.getExptimeBefore() : x.exptime;
  x.last_access = r.getLastAccess();
  x.fetched = r.getFetched();
  x.win = r.getWin();
  x.stale = r.getStale();
  x.already_won = r.getAlreadyWon();
  x.value_size = r.getValueSize();
  x.number = r.getNumber();
  x.parked = r.getParked();
  x.deleted_lately = r.getDeletedLately();
  x.deleted_cas = r.getDeletedCas();
  if (r.hasValue())
    x.value = storage::pinned_slice::from_memory(
        std::make_shared<const std::string>(to_string(r.getValue())));
  return x;
}

// -- membership ---------------------------------------------------------------------------------

rpc::MemberState to_rpc(member_state s) {
  switch (s) {
    case member_state::alive: return rpc::MemberState::ALIVE;
    case member_state::suspect: return rpc::MemberState::SUSPECT;
    case member_state::dead: return rpc::MemberState::DEAD;
    case member_state::left: return rpc::MemberState::LEFT;
  }
  return rpc::MemberState::DEAD;
}

member_state from_rpc(rpc::MemberState s) {
  switch (s) {
    case rpc::MemberState::ALIVE: return member_state::alive;
    case rpc::MemberState::SUSPECT: return member_state::suspect;
    case rpc::MemberState::DEAD: return member_state::dead;
    case rpc::MemberState::LEFT: return member_state::left;
  }
  return member_state::dead;
}

void to_rpc(const member_update& u, rpc::MemberInfo::Builder b) {
  b.setName(u.name);
  b.setRpcAddress(u.address);
  b.setClientAddress(u.client_address);
  b.setIncarnation(u.incarnation);
  b.setState(to_rpc(u.state));
  b.setWeight(u.weight);
  b.setStateAgeMs(u.age_ms);
  b.setInstance(u.instance);
}

void to_rpc(const member_info& i, rpc::MemberInfo::Builder b) {
  b.setName(i.name);
  b.setRpcAddress(i.address);
  b.setClientAddress(i.client_address);
  b.setIncarnation(i.incarnation);
  b.setState(to_rpc(i.state));
  b.setWeight(i.weight);
  b.setInstance(i.instance);
}

void to_rpc(const ring_member& m, rpc::MemberInfo::Builder b) {
  b.setName(m.name);
  b.setRpcAddress(m.address);
  b.setWeight(m.weight);
  b.setState(m.alive ? rpc::MemberState::ALIVE : rpc::MemberState::DEAD);
}

member_update from_rpc(rpc::MemberInfo::Reader r) {
  member_update u;
  u.name = to_string(r.getName());
  u.address = to_string(r.getRpcAddress());
  u.client_address = to_string(r.getClientAddress());
  u.incarnation = r.getIncarnation();
  u.state = from_rpc(r.getState());
  u.weight = r.getWeight();
  u.age_ms = r.getStateAgeMs();
  u.instance = r.getInstance();
  return u;
}

namespace {

rpc::SwimMessage::Kind to_rpc(message_kind k) {
  switch (k) {
    case message_kind::ping: return rpc::SwimMessage::Kind::PING;
    case message_kind::ping_req: return rpc::SwimMessage::Kind::PING_REQ;
    case message_kind::ack: return rpc::SwimMessage::Kind::ACK;
    case message_kind::join: return rpc::SwimMessage::Kind::JOIN;
    case message_kind::join_reply: return rpc::SwimMessage::Kind::JOIN_REPLY;
    case message_kind::leave: return rpc::SwimMessage::Kind::LEAVE;
    case message_kind::gossip: return rpc::SwimMessage::Kind::GOSSIP;
  }
  return rpc::SwimMessage::Kind::GOSSIP;
}

} // namespace

void to_rpc(const message& m, rpc::SwimMessage::Builder b) {
  b.setKind(to_rpc(m.kind));
  b.setFrom(m.from);
  b.setFromAddress(m.from_address);
  b.setTo(m.to);
  b.setTarget(m.target);
  b.setTargetAddress(m.target_address);
  b.setSeq(m.seq);
  auto ups = b.initUpdates(static_cast<unsigned>(m.updates.size()));
  for (size_t i = 0; i < m.updates.size(); ++i)
    to_rpc(m.updates[i], ups[static_cast<unsigned>(i)]);
  auto mem = b.initMembers(static_cast<unsigned>(m.members.size()));
  for (size_t i = 0; i < m.members.size(); ++i)
    to_rpc(m.members[i], mem[static_cast<unsigned>(i)]);
}

bool from_rpc(rpc::SwimMessage::Reader r, message& m) {
  switch (r.getKind()) {
    case rpc::SwimMessage::Kind::PING: m.kind = message_kind::ping; break;
    case rpc::SwimMessage::Kind::PING_REQ: m.kind = message_kind::ping_req; break;
    case rpc::SwimMessage::Kind::ACK: m.kind = message_kind::ack; break;
    case rpc::SwimMessage::Kind::JOIN: m.kind = message_kind::join; break;
    case rpc::SwimMessage::Kind::JOIN_REPLY: m.kind = message_kind::join_reply; break;
    case rpc::SwimMessage::Kind::LEAVE: m.kind = message_kind::leave; break;
    case rpc::SwimMessage::Kind::GOSSIP: m.kind = message_kind::gossip; break;
    default: return false;  // nack (unused) or a newer kind
  }
  m.from = to_string(r.getFrom());
  m.from_address = to_string(r.getFromAddress());
  m.to = to_string(r.getTo());
  m.target = to_string(r.getTarget());
  m.target_address = to_string(r.getTargetAddress());
  m.seq = r.getSeq();
  if (r.getUpdates().size() > max_swim_members || r.getMembers().size() > max_swim_members)
    return false;  // a hostile list (empty structs cost nothing to send): dropped
  m.updates.clear();
  for (auto u : r.getUpdates())
    m.updates.push_back(from_rpc(u));
  m.members.clear();
  for (auto u : r.getMembers())
    m.members.push_back(from_rpc(u));
  return true;
}

} // namespace bifrost::cluster
