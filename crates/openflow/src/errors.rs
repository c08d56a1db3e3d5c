//! Names of OpenFlow 1.3 error types and codes (as `ovs-ofctl` prints them).

const TYPES: [&str; 14] = [
    "OFPET_HELLO_FAILED",
    "OFPET_BAD_REQUEST",
    "OFPET_BAD_ACTION",
    "OFPET_BAD_INSTRUCTION",
    "OFPET_BAD_MATCH",
    "OFPET_FLOW_MOD_FAILED",
    "OFPET_GROUP_MOD_FAILED",
    "OFPET_PORT_MOD_FAILED",
    "OFPET_TABLE_MOD_FAILED",
    "OFPET_QUEUE_OP_FAILED",
    "OFPET_SWITCH_CONFIG_FAILED",
    "OFPET_ROLE_REQUEST_FAILED",
    "OFPET_METER_MOD_FAILED",
    "OFPET_TABLE_FEATURES_FAILED",
];

const CODES: [(&str, &[&str]); 14] = [
    ("OFPHFC_", &["INCOMPATIBLE", "EPERM"]),
    (
        "OFPBRC_",
        &[
            "BAD_VERSION",
            "BAD_TYPE",
            "BAD_MULTIPART",
            "BAD_EXPERIMENTER",
            "BAD_EXP_TYPE",
            "EPERM",
            "BAD_LEN",
            "BUFFER_EMPTY",
            "BUFFER_UNKNOWN",
            "BAD_TABLE_ID",
            "IS_SLAVE",
            "BAD_PORT",
            "BAD_PACKET",
            "MULTIPART_BUFFER_OVERFLOW",
        ],
    ),
    (
        "OFPBAC_",
        &[
            "BAD_TYPE",
            "BAD_LEN",
            "BAD_EXPERIMENTER",
            "BAD_EXP_TYPE",
            "BAD_OUT_PORT",
            "BAD_ARGUMENT",
            "EPERM",
            "TOO_MANY",
            "BAD_QUEUE",
            "BAD_OUT_GROUP",
            "MATCH_INCONSISTENT",
            "UNSUPPORTED_ORDER",
            "BAD_TAG",
            "BAD_SET_TYPE",
            "BAD_SET_LEN",
            "BAD_SET_ARGUMENT",
        ],
    ),
    (
        "OFPBIC_",
        &[
            "UNKNOWN_INST",
            "UNSUP_INST",
            "BAD_TABLE_ID",
            "UNSUP_METADATA",
            "UNSUP_METADATA_MASK",
            "BAD_EXPERIMENTER",
            "BAD_EXP_TYPE",
            "BAD_LEN",
            "EPERM",
        ],
    ),
    (
        "OFPBMC_",
        &[
            "BAD_TYPE",
            "BAD_LEN",
            "BAD_TAG",
            "BAD_DL_ADDR_MASK",
            "BAD_NW_ADDR_MASK",
            "BAD_WILDCARDS",
            "BAD_FIELD",
            "BAD_VALUE",
            "BAD_MASK",
            "BAD_PREREQ",
            "DUP_FIELD",
            "EPERM",
        ],
    ),
    (
        "OFPFMFC_",
        &[
            "UNKNOWN",
            "TABLE_FULL",
            "BAD_TABLE_ID",
            "OVERLAP",
            "EPERM",
            "BAD_TIMEOUT",
            "BAD_COMMAND",
            "BAD_FLAGS",
        ],
    ),
    (
        "OFPGMFC_",
        &[
            "GROUP_EXISTS",
            "INVALID_GROUP",
            "WEIGHT_UNSUPPORTED",
            "OUT_OF_GROUPS",
            "OUT_OF_BUCKETS",
            "CHAINING_UNSUPPORTED",
            "WATCH_UNSUPPORTED",
            "LOOP",
            "UNKNOWN_GROUP",
            "CHAINED_GROUP",
            "BAD_TYPE",
            "BAD_COMMAND",
            "BAD_BUCKET",
            "BAD_WATCH",
            "EPERM",
        ],
    ),
    (
        "OFPPMFC_",
        &[
            "BAD_PORT",
            "BAD_HW_ADDR",
            "BAD_CONFIG",
            "BAD_ADVERTISE",
            "EPERM",
        ],
    ),
    ("OFPTMFC_", &["BAD_TABLE", "BAD_CONFIG", "EPERM"]),
    ("OFPQOFC_", &["BAD_PORT", "BAD_QUEUE", "EPERM"]),
    ("OFPSCFC_", &["BAD_FLAGS", "BAD_LEN", "EPERM"]),
    ("OFPRRFC_", &["STALE", "UNSUP", "BAD_ROLE"]),
    (
        "OFPMMFC_",
        &[
            "UNKNOWN",
            "METER_EXISTS",
            "INVALID_METER",
            "UNKNOWN_METER",
            "BAD_COMMAND",
            "BAD_FLAGS",
            "BAD_RATE",
            "BAD_BURST",
            "BAD_BAND",
            "BAD_BAND_VALUE",
            "OUT_OF_METERS",
            "OUT_OF_BANDS",
        ],
    ),
    (
        "OFPTFFC_",
        &[
            "BAD_TABLE",
            "BAD_METADATA",
            "BAD_TYPE",
            "BAD_LEN",
            "BAD_ARGUMENT",
            "EPERM",
        ],
    ),
];

/// Bundle error codes (ONF extension for OpenFlow 1.3, codes 2300 + n).
const BUNDLE_CODES: [&str; 16] = [
    "UNKNOWN",
    "EPERM",
    "BAD_ID",
    "BUNDLE_EXIST",
    "BUNDLE_CLOSED",
    "OUT_OF_BUNDLES",
    "BAD_TYPE",
    "BAD_FLAGS",
    "MSG_BAD_LEN",
    "MSG_BAD_XID",
    "MSG_UNSUP",
    "MSG_CONFLICT",
    "MSG_TOO_MANY",
    "MSG_FAILED",
    "TIMEOUT",
    "BUNDLE_IN_PROGRESS",
];

/// Name of an error type (`OFPET_BAD_MATCH`), if standard.
pub fn type_name(ty: u16) -> Option<&'static str> {
    TYPES.get(usize::from(ty)).copied()
}

/// Name of an error (`OFPBMC_BAD_PREREQ`); experimenter errors are named where known
/// (`OFPBFC_MSG_FAILED`) and otherwise shown with their numbers.
pub fn error_name(ty: u16, code: u16, experimenter: Option<u32>) -> String {
    if let Some(exp) = experimenter {
        if exp == crate::field::ONF_EXPERIMENTER
            && let Some(n) = code
                .checked_sub(2300)
                .and_then(|c| BUNDLE_CODES.get(usize::from(c)))
        {
            return format!("OFPBFC_{n}");
        }
        return format!("experimenter error {exp:#x} code {code}");
    }
    match CODES
        .get(usize::from(ty))
        .and_then(|(p, names)| names.get(usize::from(code)).map(|n| (p, n)))
    {
        Some((p, n)) => format!("{p}{n}"),
        None => format!("error type {ty} code {code}"),
    }
}
