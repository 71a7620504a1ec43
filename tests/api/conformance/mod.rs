//! Conformance suites: the same functions run against every queue backend, every store and every
//! archive (object_store's `integration.rs` pattern).
//!
//! Layout: `queue.rs`, `store.rs` and `archive.rs` hold the suites; `sqlite.rs` runs the queue and
//! store suites on SQLite, with the tests that only the SQLite store needs; `archive.rs` runs its
//! suite on the local directory. The PostgreSQL, Redis, SQS, Kafka and S3 runs live with their
//! backends' tests (`scale.rs`, `aws.rs`, `kafka.rs`).

mod archive;
pub mod queue;
mod sqlite;
pub mod store;

// S3's run is the only one outside this folder.
#[cfg(feature = "aws")]
pub use archive::archive_suite;
pub use queue::{message, queue_suite};
// PostgreSQL's run is in scale.rs.
#[cfg(feature = "postgres")]
pub use queue::unreadable_is_set_aside_uncounted;
// Kafka's scheduler test is its only user outside this folder.
#[cfg(feature = "kafka")]
pub use queue::scheduled;
pub use store::store_suite;
