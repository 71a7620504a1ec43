//! Integration tests: the HTTP API, the worker against a real SMTP relay, and the conformance
//! suites. Run through `scripts/test`, which starts the relay.

#[cfg(feature = "aws")]
mod aws;
mod bad_input;
mod cancel;
mod compat;
mod conformance;
mod delivery;
#[cfg(feature = "kafka")]
mod kafka;
// Shared with tests/process, which uses parts this binary does not.
mod faulty;
#[allow(dead_code)]
mod helpers;
mod intake;
mod messages;

mod properties;
#[cfg(all(feature = "postgres", feature = "redis"))]
mod scale;
mod scheduling;
mod templates;
