//! testbed (placeholder, being written).
