//! An independent parser of server reply frames for the tests (panics on anything unexpected).

use dhcp::Ipv4Addr;
use frame_check::{Ethernet, be16, checksum, only};

pub struct Reply {
    pub eth: Ethernet,
    pub ip_header: Vec<u8>,
    pub ip_src: Ipv4Addr,
    pub ip_dst: Ipv4Addr,
    pub udp_src: u16,
    pub udp_dst: u16,
    /// Whether the UDP checksum (nonzero) verifies over the pseudo-header.
    pub udp_checksum_ok: bool,
    pub bootp: Vec<u8>,
    /// Every option instance in order, pads and end left out.
    pub options: Vec<(u8, Vec<u8>)>,
    /// Whether the options area ended with option 255.
    pub has_end: bool,
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

impl Reply {
    pub fn parse(frame: &[u8]) -> Self {
        let (eth, ethertype, ipv4) = Ethernet::parse(frame);
        assert_eq!(ethertype, 0x0800, "ethertype");
        assert_eq!(ipv4[0], 0x45, "IPv4 without options");
        let total = usize::from(be16(ipv4, 2));
        assert_eq!(
            total,
            ipv4.len(),
            "IPv4 total length covers the rest of the frame"
        );
        assert_eq!(ipv4[9], 17, "UDP");
        let ip_header = ipv4[..20].to_vec();
        let udp = &ipv4[20..total];
        let udp_len = usize::from(be16(udp, 4));
        assert_eq!(udp_len, udp.len(), "UDP length");
        let mut pseudo = ipv4[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
        let udp_checksum_ok = be16(udp, 6) != 0 && checksum(&[&pseudo, udp]) == 0;
        let bootp = udp[8..].to_vec();
        assert_eq!(&bootp[236..240], &[99, 130, 83, 99], "magic cookie");

        let mut options = Vec::new();
        let mut has_end = false;
        let mut at = 240;
        while at < bootp.len() {
            match bootp[at] {
                0 => at += 1,
                255 => {
                    has_end = true;
                    break;
                }
                code => {
                    let len = usize::from(bootp[at + 1]);
                    options.push((code, bootp[at + 2..at + 2 + len].to_vec()));
                    at += 2 + len;
                }
            }
        }
        Self {
            eth,
            ip_src: ip(&ip_header[12..16]),
            ip_dst: ip(&ip_header[16..20]),
            ip_header,
            udp_src: be16(udp, 0),
            udp_dst: be16(udp, 2),
            udp_checksum_ok,
            bootp,
            options,
            has_end,
        }
    }

    pub fn ip_checksum_ok(&self) -> bool {
        checksum(&[&self.ip_header]) == 0
    }

    pub fn op(&self) -> u8 {
        self.bootp[0]
    }
    pub fn xid(&self) -> u32 {
        u32::from_be_bytes(self.bootp[4..8].try_into().unwrap())
    }
    pub fn flags(&self) -> u16 {
        be16(&self.bootp, 10)
    }
    pub fn ciaddr(&self) -> Ipv4Addr {
        ip(&self.bootp[12..16])
    }
    pub fn yiaddr(&self) -> Ipv4Addr {
        ip(&self.bootp[16..20])
    }
    pub fn giaddr(&self) -> Ipv4Addr {
        ip(&self.bootp[24..28])
    }
    pub fn chaddr(&self) -> &[u8] {
        &self.bootp[28..44]
    }

    /// The codes of the options in order.
    pub fn codes(&self) -> Vec<u8> {
        self.options.iter().map(|(code, _)| *code).collect()
    }

    /// The value of the only instance of option `code`.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        only(&self.options, code)
    }
}
