//! HTTP/1.x: head parsing, chunked bodies, the connection loop and response
//! framing.

pub mod body;
pub mod chunked;
pub mod conn;
pub mod encode;
pub mod output;
pub mod parse;
pub mod sse;
