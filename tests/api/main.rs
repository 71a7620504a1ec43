//! Integration tests: the HTTP API, the worker against a real SMTP relay, and the conformance
//! suites. Run through `scripts/test`, which starts the relay.

mod compat;
mod conformance;
mod delivery;
mod helpers;
mod messages;
