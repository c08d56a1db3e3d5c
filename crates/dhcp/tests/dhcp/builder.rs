//! A small builder of realistic client frames (Ethernet, optional 802.1Q tag, IPv4 with optional
//! options, UDP 68 -> 67 with its checksum, BOOTREQUEST) and of the leases the tests answer from.

use dhcp::{Ipv4Addr, Ipv4Net, Lease};
use frame_check::{Ethernet, checksum};

pub const CLIENT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const SERVER_MAC: [u8; 6] = [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

/// A client message under construction.
#[derive(Clone)]
pub struct Client {
    pub op: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub eth_src: [u8; 6],
    pub vlan_tci: Option<u16>,
    pub ip_options: Vec<u8>,
    pub src_port: u16,
    pub sname: [u8; 64],
    pub file: [u8; 128],
    /// Raw option bytes (without the end option).
    pub options: Vec<u8>,
}

impl Client {
    /// A message of DHCP type `kind` (option 53 first) from [`CLIENT_MAC`].
    pub fn new(kind: u8, xid: u32) -> Self {
        Self {
            op: 1,
            xid,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: CLIENT_MAC,
            eth_src: CLIENT_MAC,
            vlan_tci: None,
            ip_options: Vec::new(),
            src_port: 68,
            sname: [0; 64],
            file: [0; 128],
            options: vec![53, 1, kind],
        }
    }

    pub fn option(mut self, code: u8, value: &[u8]) -> Self {
        self.options.push(code);
        self.options.push(value.len() as u8);
        self.options.extend_from_slice(value);
        self
    }

    /// The BOOTP message: fixed part, cookie, options, end option, padded to 300 bytes.
    pub fn bootp(&self) -> Vec<u8> {
        let mut msg = vec![self.op, 1, 6, 0];
        msg.extend_from_slice(&self.xid.to_be_bytes());
        msg.extend_from_slice(&[0, 3]); // secs
        msg.extend_from_slice(&self.flags.to_be_bytes());
        msg.extend_from_slice(&self.ciaddr.octets());
        msg.extend_from_slice(&[0; 8]); // yiaddr, siaddr
        msg.extend_from_slice(&self.giaddr.octets());
        msg.extend_from_slice(&self.chaddr);
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&self.sname);
        msg.extend_from_slice(&self.file);
        assert_eq!(msg.len(), 236);
        msg.extend_from_slice(&[99, 130, 83, 99]);
        msg.extend_from_slice(&self.options);
        msg.push(255);
        msg.resize(msg.len().max(300), 0);
        msg
    }

    /// The whole Ethernet frame, broadcast (or unicast to the server when `ciaddr` is set).
    pub fn frame(&self) -> Vec<u8> {
        let payload = self.bootp();
        let (src, dst) = if self.ciaddr.is_unspecified() {
            (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
        } else {
            (self.ciaddr, SERVER_IP)
        };
        let udp_len = (8 + payload.len()) as u16;
        let mut udp = Vec::new();
        udp.extend_from_slice(&self.src_port.to_be_bytes());
        udp.extend_from_slice(&67u16.to_be_bytes());
        udp.extend_from_slice(&udp_len.to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&payload);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        let sum = checksum(&[&pseudo, &udp]);
        udp[6..8].copy_from_slice(&sum.to_be_bytes());

        let header_len = 20 + self.ip_options.len();
        assert_eq!(header_len % 4, 0, "IP options must fill whole words");
        let mut ip = vec![0x40 | (header_len / 4) as u8, 0x10];
        ip.extend_from_slice(&((header_len + udp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34, 0, 0, 128, 17, 0, 0]);
        ip.extend_from_slice(&src.octets());
        ip.extend_from_slice(&dst.octets());
        ip.extend_from_slice(&self.ip_options);
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());

        let eth = Ethernet {
            dst: [0xff; 6],
            src: self.eth_src,
            vlan_tci: self.vlan_tci,
        };
        eth.frame(0x0800, &[ip, udp].concat())
    }
}

/// The typical lease of a port on 10.0.0.0/24.
pub fn lease() -> Lease {
    Lease {
        ip: CLIENT_IP,
        subnet: "10.0.0.0/24".parse().unwrap(),
        router: Some(Ipv4Addr::new(10, 0, 0, 1)),
        dns: vec![Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(8, 8, 8, 8)],
        routes: Vec::new(),
        mtu: Some(1442),
        lease_secs: 86_400,
        hostname: Some("vm-5".to_string()),
        domain: Some("example.org".to_string()),
        server_ip: SERVER_IP,
        server_mac: SERVER_MAC,
        extra: Vec::new(),
    }
}

pub fn net(text: &str) -> Ipv4Net {
    text.parse().unwrap()
}
