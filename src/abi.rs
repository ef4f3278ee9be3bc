//! Every number the core shares with C and Perl, in one place: return
//! codes, bridge record kinds, REQUEST flags, LOG levels, head-parser flags,
//! shutdown phases and request-end operations.
//!
//! xs/pagi_core.h spells each as `PAGI_<group prefix><NAME>`; the test below
//! reads the header and fails when the two sets differ in any name or value.
//! XS hands the kinds, flags, levels, phases, operations and send states to
//! Perl as constant subs (`PAGI::Server::Native::REC_BODY`, ...).

/// Declares a group of constants and, for the header test, the list of
/// their header names and values.
macro_rules! numbers {
    ($ty:ty, $prefix:literal; $($(#[$doc:meta])* $name:ident = $value:expr,)*) => {
        $($(#[$doc])* pub const $name: $ty = $value;)*
        /// Each constant's name in xs/pagi_core.h and its value.
        #[cfg(test)]
        pub const HEADER: &[(&str, i64)] = &[$((concat!($prefix, stringify!($name)), $value as i64),)*];
    };
}

/// Return codes of the C functions.
pub mod code {
    numbers! { i32, "PAGI_";
        OK = 0,
        /// The app must wait for the DRAIN record before sending more.
        PENDING = 1,
        /// The request is over (the client went away or it was ended).
        GONE = 2,
        ERR = -1,
        /// A Rust panic was caught; its message is in `pagi_server_text`.
        ERR_PANIC = -99,
    }
}

/// Record kinds of `pagi_server_drain` (layout in bridge/queue.rs).
pub mod kind {
    numbers! { u8, "PAGI_REC_";
        REQUEST = 1,
        BODY = 2,
        DISCONNECT = 3,
        DRAIN = 4,
        LOG = 5,
        IDLE = 6,
        WS_MESSAGE = 7,
        /// The client ended its side (EOF) after a complete request.
        EOF = 8,
        /// Nothing for Perl: body scalars wait to be freed (see `held`).
        RETURNED = 9,
    }
}

/// Flags of a REQUEST record (XS hands them to Perl unchanged).
pub mod req_flag {
    numbers! { u8, "PAGI_F_";
        BODY_EMPTY = 1,
        PATH_UTF8 = 2,
        UNIX = 4,
        /// `Accept: text/event-stream` and no WebSocket upgrade: an SSE scope.
        SSE = 8,
        /// `Expect: 100-continue`: Perl says when the app first wants the body.
        EXPECT = 16,
        /// A WebSocket upgrade: a websocket scope.
        WEBSOCKET = 32,
        /// Over TLS: the record ends with the connection's TLS facts.
        TLS = 64,
    }
}

/// Log levels carried by LOG records (PAGI::Server maps them to its names).
pub mod level {
    numbers! { u8, "PAGI_LOG_";
        ERROR = 1,
        WARN = 2,
        /// What only `log_level => 'debug'` shows (failed TLS handshakes).
        DEBUG = 3,
    }
}

/// Flags of a head parsed by `pagi_parse_head`.
pub mod head_flag {
    numbers! { u8, "PAGI_HEAD_";
        CHUNKED = 1,
        EXPECT = 2,
        HAS_LENGTH = 4,
        PATH_UTF8 = 8,
    }
}

/// Phases of `pagi_server_shutdown`.
pub mod phase {
    numbers! { i32, "PAGI_SHUTDOWN_";
        /// Stop accepting and let in-flight requests finish. The core
        /// treats every phase below FORCE as this one, so Rust never names it.
        #[allow(dead_code)]
        GRACEFUL = 1,
        /// Close every connection.
        FORCE = 2,
    }
}

/// Operations of `pagi_request_end`.
/// Bodies of at least `MIN` bytes are read in place from the app's scalar
/// (see `ffi::held`); smaller ones are copied.
pub mod held {
    numbers! { usize, "PAGI_HELD_";
        #[allow(dead_code)]
        MIN = 16384,
    }
}

pub mod end_op {
    numbers! { i32, "PAGI_END_";
        /// Perl saw the end: forget the request. The core treats every
        /// operation but ABORT as this one, so Rust never names it.
        #[allow(dead_code)]
        FORGET = 0,
        /// End it without a proper response: close the connection.
        ABORT = 1,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    /// The numeric `#define`s of the header, by name.
    fn header_defines() -> BTreeMap<String, i64> {
        let text = include_str!("../xs/pagi_core.h");
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("#define") {
                continue;
            }
            let (Some(name), Some(value)) = (words.next(), words.next()) else {
                continue; // the include guard
            };
            let value = value.trim_start_matches('(').trim_end_matches(')');
            let n = value
                .parse::<i64>()
                .unwrap_or_else(|_| panic!("{name}: {value} is not a number"));
            assert!(out.insert(name.to_string(), n).is_none(), "{name} twice");
        }
        out
    }

    #[test]
    fn header_spells_the_same_numbers() {
        let mut rust = BTreeMap::new();
        for group in [
            super::code::HEADER,
            super::kind::HEADER,
            super::req_flag::HEADER,
            super::level::HEADER,
            super::head_flag::HEADER,
            super::phase::HEADER,
            super::held::HEADER,
            super::end_op::HEADER,
        ] {
            for &(name, value) in group {
                assert!(
                    rust.insert(name.to_string(), value).is_none(),
                    "{name} twice"
                );
            }
        }
        assert_eq!(header_defines(), rust);
    }
}
