//! model (placeholder, being written).
