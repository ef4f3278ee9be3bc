//! The bridge to Perl: the record queue with its wake-up, and the one
//! encoder of REQUEST records.

pub mod queue;
pub mod request;
