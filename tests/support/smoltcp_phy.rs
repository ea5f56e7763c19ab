//! The client side of the property tests: an smoltcp medium-ip device whose packets the test
//! moves by hand (to a lossy link or to the project's in-memory device), and the simulated
//! clock smoltcp's TCP timestamps read.

use std::cell::Cell;
use std::collections::VecDeque;

use smoltcp::iface::{Config, Interface};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant as SInstant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv6Address};

/// Packets for smoltcp to receive (`rx`) and that it sent (`tx`), as raw IP.
pub struct ClientPhy {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: Vec<Vec<u8>>,
    pub mtu: usize,
}

impl ClientPhy {
    pub fn new(mtu: usize) -> ClientPhy {
        ClientPhy {
            rx: VecDeque::new(),
            tx: Vec::new(),
            mtu,
        }
    }
}

pub struct Rx(Vec<u8>);
pub struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push(b);
        r
    }
}

impl Device for ClientPhy {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _: SInstant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }
    fn transmit(&mut self, _: SInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        c
    }
}

thread_local! {
    /// smoltcp's timestamp generator is a plain `fn`; it reads the simulated clock here.
    static CLOCK_MS: Cell<u32> = const { Cell::new(1) };
}

/// Sets the simulated clock smoltcp's timestamps read, in milliseconds.
pub fn set_clock_ms(ms: u32) {
    CLOCK_MS.with(|c| c.set(ms));
}

/// smoltcp's TSval generator on the simulated clock.
pub fn tsval() -> u32 {
    CLOCK_MS.with(Cell::get)
}

/// The client's interface: 169.254.0.2/16 and fd00:ec2::2/64, with default routes so that
/// the metadata addresses (169.254.169.254, fd00:ec2::254) are reached through `phy`.
pub fn client_interface(phy: &mut ClientPhy) -> Result<Interface, String> {
    let mut iface = Interface::new(
        Config::new(HardwareAddress::Ip),
        phy,
        SInstant::from_millis(0),
    );
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::v4(169, 254, 0, 2), 16));
        let _ = a.push(IpCidr::new(
            IpAddress::Ipv6(Ipv6Address::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 2)),
            64,
        ));
    });
    iface
        .routes_mut()
        .add_default_ipv4_route(Ipv4Address::new(169, 254, 0, 1))
        .map_err(|e| format!("{e:?}"))?;
    iface
        .routes_mut()
        .add_default_ipv6_route(Ipv6Address::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 1))
        .map_err(|e| format!("{e:?}"))?;
    Ok(iface)
}
