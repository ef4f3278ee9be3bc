//! Protocol modules: each takes an admitted byte stream from `net` and turns
//! it into exchanges (HTTP/1.x today; HTTP/2 plugs in beside it).

pub mod h1;
