//! OpenFlow's reserved values that several message types share.

/// OpenFlow's default flow priority.
pub const DEFAULT_PRIORITY: u16 = 0x8000;
/// "No buffer" buffer id.
pub const NO_BUFFER: u32 = 0xffff_ffff;
/// "Any group" (no group restriction in deletes and stats).
pub const ANY_GROUP: u32 = 0xffff_ffff;
/// "All tables" table id (deletes and stats).
pub const ALL_TABLES: u8 = 0xff;
