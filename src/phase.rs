//! Shutdown phases, broadcast on the server's shutdown watch to accept
//! loops and connections. A leaf module, so byte-stream code can read the
//! watch without depending on the server core.

pub const RUNNING: u8 = 0;
pub const GRACEFUL: u8 = 1;
pub const FORCE: u8 = 2;
