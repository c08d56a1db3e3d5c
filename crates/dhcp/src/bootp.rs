//! The fixed layout of a BOOTP/DHCP message (RFC 2131 section 2, figure 1): field offsets and constants.

use std::ops::Range;

pub const OP_REQUEST: u8 = 1;
pub const OP_REPLY: u8 = 2;
/// `htype` for 10 Mb Ethernet (also used for every Ethernet speed).
pub const HTYPE_ETHERNET: u8 = 1;
pub const HLEN_ETHERNET: u8 = 6;

pub const OP: usize = 0;
pub const HTYPE: usize = 1;
pub const HLEN: usize = 2;
pub const XID: Range<usize> = 4..8;
pub const FLAGS: Range<usize> = 10..12;
pub const CIADDR: Range<usize> = 12..16;
pub const YIADDR: Range<usize> = 16..20;
pub const SIADDR: Range<usize> = 20..24;
pub const GIADDR: Range<usize> = 24..28;
/// The first six bytes of the 16-byte `chaddr` field.
pub const CHADDR: Range<usize> = 28..34;
pub const SNAME: Range<usize> = 44..108;
pub const FILE: Range<usize> = 108..236;
pub const COOKIE: Range<usize> = 236..240;
/// Where the options start; also the shortest valid DHCP message.
pub const OPTIONS: usize = 240;

pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// BOOTP replies are padded to at least this many bytes (RFC 1542 section 2.1).
pub const MIN_LEN: usize = 300;
