//! The shapes of attribute values: what a validator accepts, in the terms of an API description
//! (JSON types, enumerations, formats, ranges), so that the server can describe its API to clients
//! and fuzzers from the attribute maps themselves.
//!
//! A shape describes loosely: the validator, and the resource's handler after it, have the last
//! word (a list of fixed IPs has the shape of a list of dictionaries with `subnet_id` and
//! `ip_address`; whether those name a subnet of the port's network is the handler's business).

/// What a value of an attribute looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Any JSON value (the values of computed attributes).
    Any,
    /// A boolean (Neutron also converts `"true"`, `"0"`, ...).
    Boolean,
    /// A string of at most so many characters, if limited.
    Text(Option<usize>),
    /// A string in a well-known form.
    Formatted(Format),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// An integer within these bounds, where bounded.
    Integer { min: Option<i64>, max: Option<i64> },
    /// One of these integers.
    IntegerOneOf(&'static [i64]),
    /// A value of any of these shapes.
    Either(&'static [Shape]),
    /// A list of values of one shape.
    ListOf(&'static Shape),
    /// A dictionary of any keys.
    Dict,
    /// A dictionary of (some of) these keys, with the shapes of their values.
    Object(&'static [(&'static str, Shape)]),
    /// `null`, or a value of the shape.
    OrNull(&'static Shape),
}

impl Shape {
    pub const UUID: Shape = Shape::Formatted(Format::Uuid);
    pub const IP_ADDRESS: Shape = Shape::Formatted(Format::IpAddress);
    pub const CIDR: Shape = Shape::Formatted(Format::Cidr);
    pub const MAC_ADDRESS: Shape = Shape::Formatted(Format::MacAddress);
}

/// The well-known forms of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A UUID, `6f1b0c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f`.
    Uuid,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// An IPv4 or IPv6 prefix, `10.0.0.0/24`.
    Cidr,
    /// A MAC address, `fa:16:3e:00:00:01`.
    MacAddress,
}
