//! chassis (placeholder, being written).
