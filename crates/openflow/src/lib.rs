//! openflow (placeholder, being written).
