//! The fixture's tests, one binary (one link instead of three): the API conventions over plain
//! HTTP, the real `kubectl`, and the real kube-rs client.

mod api;
mod endpoint_slices;
mod kube_rs;
mod kubectl;
