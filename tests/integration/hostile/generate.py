#!/usr/bin/env python3
"""Writes the hostile-input cases of this folder (run it after editing CASES).

Each case NAME is two files:
  NAME.send    the exact bytes sent on a fresh connection, in one write;
  NAME.reply   the exact bytes the server answers; the connection then stays usable
               (test_hostile.py sends "version" on it and expects "VERSION ...");
or
  NAME.closed  the exact bytes the server answers (usually none) before it closes the
               connection by itself.
Every expectation is memcached 1.6's behaviour (checked by running the suite against it).
In the spirit of memcached's t/malicious-commands.t.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
FMT = b"CLIENT_ERROR bad command line format\r\n"
K = b"hostile_k"

# (name, bytes to send, expected reply, connection closed after?)
CASES = [
    # memcached's t/malicious-commands.t: a last token starting with "HTTP/" hangs up
    ("http_get", b"GET / HTTP/1.0\r\n", b"", True),
    ("http_put", b"PUT /asdf/asd/fasdfasdf/sadf HTTP/1.1\r\n", b"", True),
    ("http_delete", b"DELETE HTTP/1.1\r\n", b"", True),
    # a line longer than 2048 bytes without a newline (not get/gets): hang up
    ("line_2049_no_newline", b"x" * 2049, b"", True),
    ("set_line_8k_no_newline", b"set k 0 0 1" + b" " * 8192, b"", True),
    # unknown or malformed commands
    ("unknown_command", b"bogus\r\n", b"ERROR\r\n", False),
    ("uppercase_command", b"GET " + K + b"\r\n", b"ERROR\r\n", False),
    ("tab_is_not_a_separator", b"get\t" + K + b"\r\n", b"ERROR\r\n", False),
    ("empty_line", b"\r\n", b"ERROR\r\n", False),
    ("bare_newline", b"\n", b"ERROR\r\n", False),
    ("nul_bytes_only", b"\x00\x00\x00\r\n", b"ERROR\r\n", False),
    ("missing_arguments", b"set\r\nget\r\nincr\r\ndelete\r\ntouch k\r\nverbosity\r\n", b"ERROR\r\n" * 6, False),
    ("cas_without_unique", b"cas " + K + b" 0 0 1\r\n", b"ERROR\r\n", False),
    ("too_many_tokens_incr", b"incr k 1 2 3 4 5\r\n", b"ERROR\r\n", False),
    ("stats_unknown_group", b"stats nonsense\r\n", b"ERROR\r\n", False),
    # keys
    ("key_251_get", b"get " + b"a" * 251 + b"\r\n", FMT, False),
    ("key_251_gets", b"gets " + b"a" * 300 + b"\r\n", FMT, False),
    ("key_251_delete", b"delete " + b"a" * 251 + b"\r\n", FMT, False),
    # no data block is swallowed after a bad command line: "x" is then an unknown command
    ("key_251_set", b"set " + b"a" * 251 + b" 0 0 1\r\nx\r\n", FMT + b"ERROR\r\n", False),
    # storage command arguments
    ("negative_length", b"set " + K + b" 0 0 -1\r\n", FMT, False),
    ("length_over_int32", b"set " + K + b" 0 0 2147483648\r\n", FMT, False),
    ("non_numeric_length", b"set " + K + b" 0 0 abc\r\nx\r\n", FMT + b"ERROR\r\n", False),
    ("non_numeric_flags", b"set " + K + b" abc 0 1\r\nx\r\n", FMT + b"ERROR\r\n", False),
    ("negative_flags", b"set " + K + b" -1 0 1\r\nx\r\n", FMT + b"ERROR\r\n", False),
    ("non_numeric_exptime", b"set " + K + b" 0 abc 1\r\nx\r\n", FMT + b"ERROR\r\n", False),
    ("non_numeric_cas", b"cas " + K + b" 0 0 1 abc\r\nx\r\n", FMT + b"ERROR\r\n", False),
    # bad data chunk: exactly <length>+2 bytes are consumed, then parsing goes on
    ("bad_data_chunk", b"set " + K + b" 0 0 3\r\nabcXY", b"CLIENT_ERROR bad data chunk\r\n", False),
    ("bad_data_chunk_then_get", b"set " + K + b"2 0 0 3\r\nabcXYget " + K + b"2\r\n",
     b"CLIENT_ERROR bad data chunk\r\nEND\r\n", False),
    # other commands' arguments
    ("incr_bad_delta", b"incr " + K + b" abc\r\n", b"CLIENT_ERROR invalid numeric delta argument\r\n", False),
    ("incr_negative_delta", b"incr " + K + b" -1\r\n", b"CLIENT_ERROR invalid numeric delta argument\r\n", False),
    ("incr_delta_2_64", b"decr " + K + b" 18446744073709551616\r\n",
     b"CLIENT_ERROR invalid numeric delta argument\r\n", False),
    ("delete_with_time", b"delete " + K + b" 5\r\n",
     b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n", False),
    ("touch_bad_exptime", b"touch " + K + b" abc\r\n", b"CLIENT_ERROR invalid exptime argument\r\n", False),
    ("gat_bad_exptime", b"gat abc " + K + b"\r\n", b"CLIENT_ERROR invalid exptime argument\r\n", False),
    ("flush_all_bad_delay", b"flush_all abc\r\n", b"CLIENT_ERROR invalid exptime argument\r\n", False),
    ("verbosity_bad_level", b"verbosity x\r\n", FMT, False),
    # meta commands
    ("mg_no_key", b"mg\r\n", b"ERROR\r\n", False),
    ("mg_key_251", b"mg " + b"a" * 251 + b" v\r\n", FMT, False),
    ("mg_invalid_flag", b"mg " + K + b" zz\r\n", b"CLIENT_ERROR invalid flag\r\n", False),
    ("mg_duplicate_flag", b"mg " + K + b" v v\r\n", b"CLIENT_ERROR duplicate flag\r\n", False),
    ("mg_bad_base64_key", b"mg ab!c b v\r\n", b"CLIENT_ERROR error decoding key\r\n", False),
    ("mg_opaque_too_long", b"mg " + K + b" v O" + b"1" * 40 + b"\r\n",
     b"CLIENT_ERROR opaque token too long\r\n", False),
    ("ms_no_length", b"ms " + K + b"\r\n", FMT, False),
    ("ms_bad_length", b"ms " + K + b" abc\r\n", FMT, False),
    ("ms_negative_length", b"ms " + K + b" -1\r\n", FMT, False),
    # once the length is known, ms swallows the data block of a refused request
    ("ms_invalid_mode", b"ms " + K + b" 1 Mz\r\nx\r\n", b"CLIENT_ERROR invalid mode for ms M token\r\n", False),
    ("ms_invalid_flag", b"ms " + K + b" 2 zz\r\nhi\r\n", b"CLIENT_ERROR invalid flag\r\n", False),
    ("ms_bad_data_chunk", b"ms " + K + b" 2\r\nhiXY", b"CLIENT_ERROR bad data chunk\r\n", False),
    ("ma_invalid_mode", b"ma " + K + b" Mz\r\n", b"CLIENT_ERROR invalid mode for ma M token\r\n", False),
    ("mn_with_empty_line", b"mn\r\n\r\nmn\r\n", b"MN\r\nERROR\r\nMN\r\n", False),
]


def main():
    for name in os.listdir(HERE):
        if name.endswith((".send", ".reply", ".closed")):
            os.remove(os.path.join(HERE, name))
    for name, send, reply, closed in CASES:
        with open(os.path.join(HERE, name + ".send"), "wb") as f:
            f.write(send)
        with open(os.path.join(HERE, name + (".closed" if closed else ".reply")), "wb") as f:
            f.write(reply)
    print("wrote %d cases" % len(CASES))


if __name__ == "__main__":
    main()
