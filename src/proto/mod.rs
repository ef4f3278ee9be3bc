//! Protocol modules: each takes an admitted byte stream from `net` and turns
//! it into exchanges (HTTP/1.x and HTTP/2).

pub mod h1;
pub mod h2;
