//! End-to-end tests of the mock upstream over real sockets on ephemeral ports.

mod auth;
mod bodies;
mod control;
mod faults;
mod lifecycle;
mod recording;
mod routing;
mod streaming;
mod support;
