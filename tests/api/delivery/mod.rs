//! The worker against the real SMTP relay, a file per concept: what reaches the relay and the
//! archive (`smtp.rs`), retries, dead letters and redrives (`failures.rs`), and leases, the
//! rate ceiling and shutdown (`leases.rs`).

mod failures;
mod leases;
mod smtp;
