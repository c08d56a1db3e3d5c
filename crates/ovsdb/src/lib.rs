//! ovsdb (placeholder, being written).
