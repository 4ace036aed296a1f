# Bifrost's one RPC schema: node-to-node traffic (membership, data, replication, warming)
# and bifrostctl's queries and admin calls. Bump `schemaVersion` on any incompatible change:
# `hello` refuses a peer whose version differs, with a message naming both versions.
@0xd1a3d9794dd75523;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("bifrost::cluster::rpc");

const schemaVersion :UInt32 = 2;  # 2: deletes copied with their point (Op.copy on a remove)

enum MemberState {
  alive @0;
  suspect @1;
  dead @2;
  left @3;
}

struct MemberInfo {
  name @0 :Text;            # unique node name
  rpcAddress @1 :Text;      # host:port of this schema's server
  clientAddress @2 :Text;   # host:port of the memcached listener
  incarnation @3 :UInt64;
  state @4 :MemberState;
  weight @5 :UInt32;
  stateAgeMs @6 :UInt64;    # dead, left: how long the sender has held that state (0 = now)
  instance @7 :UInt64;      # drawn by the member's process at start: another one under the
                            # same name is a restart (0 = not known)
}

# One SWIM protocol message (cluster/membership.hpp). Updates are piggybacked gossip.
struct SwimMessage {
  kind @0 :Kind;
  enum Kind {
    ping @0;
    pingReq @1;   # please ping `target` for me
    ack @2;
    join @3;
    joinReply @4; # `members` holds the full list
    leave @5;
    nack @6;      # indirect probe could not reach the target (unused: no Lifeguard LHA)
    gossip @7;    # piggybacked updates only; no answer expected
  }
  from @1 :Text;
  target @2 :Text;
  targetAddress @3 :Text;
  seq @4 :UInt64;
  updates @5 :List(MemberInfo);
  members @6 :List(MemberInfo);
  fromAddress @7 :Text;     # sender's RPC address: answers go there
  to @8 :Text;              # receiver's name; empty when unknown (a join sent to a seed)
  pastRings @9 :List(PastRing);  # joinReply: the sender's rings still warmed from, newest first
}

# A placement a member still warms from (actors/cluster_view.hpp, past_ring), as a join reply
# hands it to the joining node: the members it was built from (state alive or dead), and how
# long its warming window still runs at the sender.
struct PastRing {
  members @0 :List(MemberInfo);
  remainingMs @1 :UInt64;
  eraseRanks @2 :UInt8;
  joining @3 :Text;         # a member it has dead only because it was joining (the sender)
}

# storage/ops.hpp, field for field.
enum OpKind { get @0; store @1; remove @2; arith @3; touch @4; flush @5; }
enum StoreMode { set @0; add @1; replace @2; append @3; prepend @4; cas @5; }
enum Status {
  hit @0; miss @1; stored @2; notStored @3; exists @4; notFound @5; deleted @6;
  tooLarge @7; noMemory @8; nonNumeric @9; ok @10; unavailable @11;
}

struct Op {
  kind @0 :OpKind;
  key @1 :Data;
  value @2 :Data;
  mode @3 :StoreMode;
  flags @4 :UInt32;
  ttl @5 :Int64;
  compareCas @6 :UInt64;
  invalidate @7 :Bool;
  explicitCas @8 :UInt64;
  getValue @9 :Bool;
  getTouch @10 :Bool;
  getBump @11 :Bool;
  vivify @12 :Bool;
  vivifyTtl @13 :Int64;
  recache @14 :Bool;
  recacheTtl @15 :Int64;
  incr @16 :Bool;
  delta @17 :UInt64;
  initial @18 :UInt64;
  keepToken @19 :Bool;  # a read that leaves a stale item's win token (false from old nodes)
  handBack @20 :Bool;   # remove: only an item stored before the node's return; store: a
                        # hand-back's copy, ordered by the CAS clock (storage/ops.hpp)
  parked @21 :UInt64;   # a re-read of the result parked under this token (storage/parked.hpp)
  routed @22 :UInt8;    # origin client: how many times a node placed this op by its own ring
                        # on the way (bifrostctl's node, or one that found the sender's ring
                        # older than its own); from 2 on it runs where it arrives, whatever
                        # that node's ring says (actors/cluster_route.hpp, max_routed)
  recacheBeforeTouch @23 :Bool;  # mg R left of T: R compares the TTL before the touch
  asStale @24 :Bool;    # store: a copy of a stale item, stored stale (false from old nodes)
  tokenOut @25 :Bool;   # store: a copy whose win token is out already (false from old nodes)
  copy @26 :Bool;       # store: a copy of another node's item (warming, re-replication); as an
                        # add, refused for a key deleted there lately (false from old nodes);
                        # remove: a copy of a delete (storage::delete_copy: explicitCas is its
                        # point; an item older than it goes; since schema version 2)
  casGiven @27 :Bool;   # remove: compareCas was given, also as 0, which no item has (md C0)
  asFetched @28 :Bool;  # store: a copy of an item that was read (meta h1; false from old nodes)
  counts @29 :UInt8;    # storage::op::counting: how a client op counts in the hit and miss
                        # stats (0, as its kind, from old nodes)
}

struct Result {
  status @0 :Status;
  flags @1 :UInt32;
  cas @2 :UInt64;           # (a plain delete's: the CAS of the item it removed or refused;
                            # 0 from older nodes)
  exptime @3 :UInt32;
  lastAccess @4 :UInt32;
  fetched @5 :Bool;
  win @6 :Bool;
  stale @7 :Bool;
  alreadyWon @8 :Bool;
  valueSize @9 :UInt32;
  number @10 :UInt64;
  value @11 :Data;          # inline when small; empty with `streamed` when sent via a sink
  streamed @12 :Bool;
  parked @13 :UInt64;       # with `streamed`: the owner keeps the result for a re-read naming
                            # this token (Op.parked); 0 = it does not (not asked to, an older
                            # node, or a caller it does not know as a member)
  exptimeBefore @14 :UInt32;  # the item's exptime before the op's T (or N): a meta `t` left of
  exptimeBeforeSet @15 :Bool; # them shows it; unset (an older node): `exptime`
  deletedLately @16 :Bool;    # found no item (a read's miss, a delete's or an update's
                              # not_found / not_stored) where a delete, a flush_all or the
                              # expiry of an item written there took the key lately
                              # (storage::result::deleted_lately); false from older nodes
  deletedCas @17 :UInt64;     # found no item where such a delete was noted there lately, in
                              # this ring or before: its point on the CAS clock
                              # (storage::result::deleted_cas); 0 = none, or an older node
}

# Why a node executes ops on behalf of another.
enum Origin {
  client @0;    # forwarded client request: execute as the primary, then replicate
  replica @1;   # replication from the primary: apply, do not replicate further
  warm @2;      # write-on-miss warming: read without counting an access
}

# Data links (cluster/link_wire.hpp): the fast path for forwarded ops. A member opens a TCP
# connection to another member's memcached port, sends the line
# "bifrost-link <schemaVersion> <its node name>\r\n", waits for "LINK <schemaVersion>\r\n",
# then both sides exchange these structs as standard Cap'n Proto stream frames (segment table,
# then segments): calls one way, replies the other, matched by `id` (replies may come in any
# order). Only ops whose values fit inline travel here; a get result whose value is larger
# than the inline limit comes back `streamed` and empty, like an execute without a sink.
struct LinkCall {
  id @0 :UInt64;
  origin @1 :Origin;
  ops @2 :List(Op);
  park @3 :Bool;  # the caller re-reads a `streamed` value by its token (Result.parked): keep it
  ring @4 :UInt64;  # origin client: the placement the caller placed these ops by
                    # (cluster::ring::placement); 0 = not said (an older node)
  sentAtMs @5 :UInt64;   # the caller's CLOCK_MONOTONIC_RAW (ms) when it sent the call, and its RPC
  timeoutMs @6 :UInt32;  # timeout: a client call arriving later than that after the quickest
                         # arrival lately is refused (cluster/arrival_clock.hpp); 0 = not said
}

struct LinkReply {
  id @0 :UInt64;
  results @1 :List(Result);
}

# Large values cross nodes in chunks (`-> stream` keeps flow control per call).
#
# `index` is the index of the op within the execute (or upload) call that the chunk belongs
# to; the chunks of one value arrive in order (E-order on one capability) and are appended.
# - execute's sink (get results): the server streams the chunks of every value above the
#   inline limit (64 KiB), in chunks of up to 256 KiB, then returns execute's results, where
#   those values are empty with `streamed = true` and `valueSize` set. The server never calls
#   `finish` on such a sink.
# - upload's sink (large stores): the client writes the values of the ops that it sent
#   without one, then calls `finish`, which executes the batch and returns its results.
interface ValueSink {
  write @0 (index :UInt32, chunk :Data) -> stream;
  finish @1 (sentAtMs :UInt64, timeoutMs :UInt32) -> (results :List(Result));
  # `sentAtMs`, `timeoutMs`: as LinkCall's (an upload's stores run at finish).
}

struct Stat {
  name @0 :Text;
  value @1 :Text;
}

struct MemberStatus {
  info @0 :MemberInfo;
  ringShare @1 :Float64;    # fraction of the key space this member owns as primary
  items @2 :UInt64;
  bytes @3 :UInt64;
  draining @4 :Bool;        # Node.drain was called on this member
  sizeUnknown @5 :Bool;     # items and bytes are not known: the member did not answer in
                            # time (hung, or gone but not found dead yet), or is dead
}

interface Node {
  # Handshake: refused (an exception naming both versions) when the schema versions differ.
  # Members also say their --replicas (0: not said, as by bifrostctl), whether they are in a
  # cluster (have seen another live member) and when they started (unix ms): between members
  # whose --replicas differ nothing more is exchanged, and the same rule on both sides picks
  # the one that stops (cluster/service.cpp, replicas_conflict). `sentAtMs`: as a data call's
  # (LinkCall.sentAtMs), the first arrival the connection's later calls are measured against.
  hello @0 (version :UInt32, from :MemberInfo, replicas :UInt32, inCluster :Bool,
            startedAtMs :UInt64, sentAtMs :UInt64)
      -> (version :UInt32, self :MemberInfo, replicas :UInt32, inCluster :Bool,
          startedAtMs :UInt64);

  # Membership. `reply` is set when the receiver's first answer goes back to the caller (e.g.
  # ack to a ping, joinReply to a join); other answers travel as swim calls of their own.
  swim @1 (msg :SwimMessage) -> (reply :SwimMessage);

  # Data. Values larger than the inline limit are streamed through `sink` (get results) or
  # uploaded through the sink returned by `upload` (stores).
  # `waitReplicas` (origin client only): answer a write after every live owner of its key has
  # stored it, not after the primary alone; a write some owner did not acknowledge answers
  # `unavailable` (it is stored on the primary and on the owners that did acknowledge).
  # `park` (members only): a value streamed without a sink is kept for the caller's re-read
  # (Result.parked; storage/parked.hpp).
  # `ring` (origin client): as LinkCall.ring. A member placed by a ring the receiver has
  # replaced (its view lags a ring change): ops of keys the receiver no longer owns are
  # placed again by the receiver's ring (cluster/service.hpp, stale placements); the same
  # for an upload's stores (0 from older nodes: they run at the receiver).
  # `sentAtMs`, `timeoutMs` (origin client, members): as LinkCall's.
  execute @2 (ops :List(Op), origin :Origin, sink :ValueSink, waitReplicas :Bool, park :Bool,
              ring :UInt64, sentAtMs :UInt64, timeoutMs :UInt32)
      -> (results :List(Result));
  upload @3 (ops :List(Op), origin :Origin, waitReplicas :Bool, ring :UInt64,
             sentAtMs :UInt64, timeoutMs :UInt32)
      -> (sink :ValueSink);

  # Queries (bifrostctl and peers).
  status @4 () -> (self :MemberStatus, version :Text, uptime :UInt64, cluster :Text);
  # cluster: where the node stands ("alone", "joining: ...", "alone: no seed answered ...",
  # "N live members"; empty from older nodes)
  members @5 (withoutSizes :Bool) -> (members :List(MemberStatus));
  # withoutSizes: items and bytes are not asked of the members (sizeUnknown), so a member
  # that does not answer holds nothing up (bifrostctl ring)
  ring @6 (key :Data) -> (owners :List(MemberInfo), epoch :UInt64);
  stats @7 () -> (stats :List(Stat));

  # Admin.
  drain @8 (holdUntilExit :Bool) -> (held :Bool, stopsInMs :UInt32);
  leave @9 (holdUntilExit :Bool) -> (held :Bool, stopsInMs :UInt32);
  # holdUntilExit (bifrostctl drain/leave --wait): the node keeps this connection's socket
  # open until its process ends, so the caller sees it close once the node has stopped (its
  # data directory and ports free); held says it does (once per connection). Otherwise
  # (older nodes, no fd left, 256 waiters held) the connection closes when the RPC service
  # stops, a moment before the process ends.
  # stopsInMs: how long the node lingers from now before its stop begins (0: unknown); a
  # process that ends sooner was cut short (a signal, a crash).
}
