//! store (placeholder, being written).
