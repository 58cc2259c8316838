//! The PC's pair of 8259A interrupt controllers: master at 0x20/0x21 (IRQ 0–7), slave at
//! 0xa0/0xa1 (IRQ 8–15) cascaded into the master's IR2, plus the edge/level control
//! registers (ELCR) at 0x4d0/0x4d1.
//!
//! Modelled: the ICW1–ICW4 initialisation sequence (vector base, single/cascade, auto-EOI),
//! OCW1 (mask), OCW2 (non-specific, specific and rotating EOIs, set priority, rotate in
//! auto-EOI), OCW3 (IRR/ISR read select, poll, special mask mode), edge-triggered lines
//! and level-triggered ones where the ELCR says so, and the spurious IRQ 7/15 rule.
//! Not modelled: special fully nested mode, ICW1's LTIM bit (the ELCR decides instead, as
//! on PCI-era chipsets), 8080 call-address mode.
//!
//! The slave's INT output feeds the master's IR2 as a level, so a request waiting in the
//! slave is seen by the master for as long as it is deliverable.

/// Master command port.
pub const MASTER_COMMAND: u16 = 0x20;
/// Master data (mask) port.
pub const MASTER_DATA: u16 = 0x21;
/// Slave command port.
pub const SLAVE_COMMAND: u16 = 0xa0;
/// Slave data (mask) port.
pub const SLAVE_DATA: u16 = 0xa1;
/// ELCR for IRQ 0–7.
pub const ELCR_MASTER: u16 = 0x4d0;
/// ELCR for IRQ 8–15.
pub const ELCR_SLAVE: u16 = 0x4d1;

/// The master line the slave is cascaded into.
const CASCADE_LINE: u8 = 2;

/// Lines that are always edge-triggered on a PC (timer, keyboard, cascade; RTC, FPU).
const ELCR_WRITABLE: [u8; 2] = [0xf8, 0xde];

/// Where a chip is in its initialisation sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Init {
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

/// One 8259A.
#[derive(Clone, Debug)]
struct Chip {
    irr: u8,
    isr: u8,
    imr: u8,
    /// Input line levels as last set, for edge detection.
    levels: u8,
    /// Level-triggered lines.
    elcr: u8,
    elcr_writable: u8,
    vector_base: u8,
    init: Init,
    needs_icw4: bool,
    single: bool,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    /// The line with the lowest priority; the one after it has the highest.
    lowest_priority: u8,
    read_isr: bool,
    poll: bool,
    special_mask: bool,
    icw3: u8,
}

impl Chip {
    fn new(vector_base: u8, elcr_writable: u8) -> Self {
        Self {
            irr: 0,
            isr: 0,
            imr: 0xff,
            levels: 0,
            elcr: 0,
            elcr_writable,
            vector_base,
            init: Init::Ready,
            needs_icw4: false,
            single: false,
            auto_eoi: false,
            rotate_on_auto_eoi: false,
            lowest_priority: 7,
            read_isr: false,
            poll: false,
            special_mask: false,
            icw3: 0,
        }
    }

    fn set_line(&mut self, line: u8, level: bool) {
        let bit = 1 << (line & 7);
        if self.elcr & bit != 0 {
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.levels & bit == 0 {
            self.irr |= bit;
        }
        if level {
            self.levels |= bit;
        } else {
            self.levels &= !bit;
        }
    }

    /// Lines in priority order, highest first.
    fn by_priority(&self) -> impl Iterator<Item = u8> {
        let first = self.lowest_priority.wrapping_add(1);
        (0..8u8).map(move |i| first.wrapping_add(i) & 7)
    }

    /// The highest-priority in-service line that blocks others.
    fn highest_in_service(&self) -> Option<u8> {
        // In special mask mode, masked in-service lines do not block lower priorities.
        let blocking = if self.special_mask {
            self.isr & !self.imr
        } else {
            self.isr
        };
        self.by_priority().find(|&line| blocking & (1 << line) != 0)
    }

    /// The request that would be delivered now, given `irr` (which may include the
    /// cascade's input): unmasked, and of higher priority than anything in service.
    fn deliverable(&self, irr: u8) -> Option<u8> {
        let requests = irr & !self.imr;
        let blocker = self.highest_in_service();
        for line in self.by_priority() {
            if Some(line) == blocker {
                return None;
            }
            if requests & (1 << line) != 0 {
                return Some(line);
            }
        }
        None
    }

    /// INTA for `line`: into service (unless auto-EOI), out of the request register if
    /// edge-triggered (a level line requests again while its input stays high).
    fn acknowledge(&mut self, line: u8) {
        let bit = 1 << line;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.lowest_priority = line;
            }
        } else {
            self.isr |= bit;
        }
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            self.start_init(value);
        } else if value & 0x08 != 0 {
            self.write_ocw3(value);
        } else {
            self.write_ocw2(value);
        }
    }

    fn start_init(&mut self, icw1: u8) {
        self.init = Init::Icw2;
        self.needs_icw4 = icw1 & 0x01 != 0;
        self.single = icw1 & 0x02 != 0;
        self.imr = 0;
        self.isr = 0;
        // Edge sense reset: an edge line must go low and high again to request.
        self.irr = self.levels & self.elcr;
        self.auto_eoi = false;
        self.rotate_on_auto_eoi = false;
        self.lowest_priority = 7;
        self.read_isr = false;
        self.poll = false;
        self.special_mask = false;
    }

    fn write_ocw2(&mut self, value: u8) {
        let line = value & 7;
        match value >> 5 {
            0b001 => {
                // Non-specific EOI.
                if let Some(line) = self.highest_in_service() {
                    self.isr &= !(1 << line);
                }
            }
            0b011 => self.isr &= !(1 << line),
            0b101 => {
                // Rotate on non-specific EOI.
                if let Some(line) = self.highest_in_service() {
                    self.isr &= !(1 << line);
                    self.lowest_priority = line;
                }
            }
            0b111 => {
                // Rotate on specific EOI.
                self.isr &= !(1 << line);
                self.lowest_priority = line;
            }
            0b110 => self.lowest_priority = line,
            0b100 => self.rotate_on_auto_eoi = true,
            0b000 => self.rotate_on_auto_eoi = false,
            _ => {} // no operation
        }
    }

    fn write_ocw3(&mut self, value: u8) {
        if value & 0x02 != 0 {
            self.read_isr = value & 0x01 != 0;
        }
        self.poll = value & 0x04 != 0;
        if value & 0x40 != 0 {
            self.special_mask = value & 0x20 != 0;
        }
    }

    /// A write to the data port: the next ICW during initialisation, else the mask.
    fn write_data(&mut self, value: u8) {
        self.init = match self.init {
            Init::Ready => {
                self.imr = value;
                Init::Ready
            }
            Init::Icw2 => {
                self.vector_base = value & 0xf8;
                if !self.single {
                    Init::Icw3
                } else if self.needs_icw4 {
                    Init::Icw4
                } else {
                    Init::Ready
                }
            }
            Init::Icw3 => {
                self.icw3 = value;
                if self.needs_icw4 {
                    Init::Icw4
                } else {
                    Init::Ready
                }
            }
            Init::Icw4 => {
                self.auto_eoi = value & 0x02 != 0;
                Init::Ready
            }
        };
    }

    fn write_elcr(&mut self, value: u8) {
        self.elcr = value & self.elcr_writable;
        // Level lines request exactly while their input is high.
        self.irr = (self.irr & !self.elcr) | (self.levels & self.elcr);
    }
}

/// The master/slave 8259A pair.
#[derive(Clone, Debug)]
pub struct PicPair {
    master: Chip,
    slave: Chip,
}

impl Default for PicPair {
    fn default() -> Self {
        Self::new()
    }
}

impl PicPair {
    /// A pair at power-on: everything masked, vector bases 0x08 and 0x70 (the BIOS's).
    pub fn new() -> Self {
        Self {
            master: Chip::new(0x08, ELCR_WRITABLE[0]),
            slave: Chip::new(0x70, ELCR_WRITABLE[1]),
        }
    }

    /// Sets input line `line` (0–15) to `level`; a rising edge requests an interrupt on an
    /// edge-triggered line. Lines above 15 are ignored.
    pub fn set_irq(&mut self, line: u8, level: bool) {
        match line {
            0..=7 => self.master.set_line(line, level),
            8..=15 => self.slave.set_line(line - 8, level),
            _ => {}
        }
    }

    /// The vector the pair would deliver now, if any: the highest-priority unmasked request
    /// not blocked by a line of equal or higher priority in service.
    pub fn pending_vector(&self) -> Option<u8> {
        let line = self.master.deliverable(self.master_requests())?;
        if self.cascades_on(line) {
            // A request only on IR2 itself (no slave request) ends as a spurious IRQ 15.
            let slave_line = self.slave.deliverable(self.slave.irr).unwrap_or(7);
            Some(self.slave.vector_base | slave_line)
        } else {
            Some(self.master.vector_base | line)
        }
    }

    /// The CPU's interrupt acknowledge: delivers the vector [`Self::pending_vector`] names
    /// and moves its request into service (through the cascade for IRQ 8–15; not at all
    /// with auto-EOI). `None` if nothing is deliverable. When the master answers for the
    /// cascade but the slave has no request left, the slave's IR7 vector is returned
    /// without anything entering the slave's service register (the spurious IRQ 15 rule).
    pub fn acknowledge(&mut self) -> Option<u8> {
        let line = self.master.deliverable(self.master_requests())?;
        self.master.acknowledge(line);
        if !self.cascades_on(line) {
            return Some(self.master.vector_base | line);
        }
        match self.slave.deliverable(self.slave.irr) {
            Some(slave_line) => {
                self.slave.acknowledge(slave_line);
                Some(self.slave.vector_base | slave_line)
            }
            None => Some(self.slave.vector_base | 7),
        }
    }

    /// Reads one of the pair's ports (see the constants); other ports read 0xff.
    pub fn read_port(&mut self, port: u16) -> u8 {
        match port {
            MASTER_COMMAND => {
                let irr = self.master_requests();
                Self::read_command(&mut self.master, irr)
            }
            SLAVE_COMMAND => {
                let irr = self.slave.irr;
                Self::read_command(&mut self.slave, irr)
            }
            MASTER_DATA => self.master.imr,
            SLAVE_DATA => self.slave.imr,
            ELCR_MASTER => self.master.elcr,
            ELCR_SLAVE => self.slave.elcr,
            _ => 0xff,
        }
    }

    /// Writes one of the pair's ports (see the constants); other ports are ignored.
    pub fn write_port(&mut self, port: u16, value: u8) {
        match port {
            MASTER_COMMAND => self.master.write_command(value),
            SLAVE_COMMAND => self.slave.write_command(value),
            MASTER_DATA => self.master.write_data(value),
            SLAVE_DATA => self.slave.write_data(value),
            ELCR_MASTER => self.master.write_elcr(value),
            ELCR_SLAVE => self.slave.write_elcr(value),
            _ => {}
        }
    }

    /// Whether line `line` (0–15) is masked.
    pub fn is_masked(&self, line: u8) -> bool {
        match line {
            0..=7 => self.master.imr & (1 << line) != 0,
            8..=15 => self.slave.imr & (1 << (line - 8)) != 0,
            _ => true,
        }
    }

    /// Whether the master's `line` is where the slave is cascaded.
    fn cascades_on(&self, line: u8) -> bool {
        line == CASCADE_LINE && !self.master.single
    }

    /// The master's request register with the slave's INT output on the cascade line.
    fn master_requests(&self) -> u8 {
        let slave_int = !self.master.single && self.slave.deliverable(self.slave.irr).is_some();
        self.master.irr | if slave_int { 1 << CASCADE_LINE } else { 0 }
    }

    /// A read of a command port: the poll answer if polling, else IRR or ISR.
    fn read_command(chip: &mut Chip, irr: u8) -> u8 {
        if chip.poll {
            chip.poll = false;
            return match chip.deliverable(irr) {
                Some(line) => {
                    chip.acknowledge(line);
                    0x80 | line
                }
                None => 0,
            };
        }
        if chip.read_isr { chip.isr } else { irr }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's init_8259A: ICW1 0x11, vector bases 0x30/0x38, cascade on IR2, 8086 mode.
    fn linux_init(auto_eoi: bool) -> PicPair {
        let mut pic = PicPair::new();
        let icw4 = if auto_eoi { 0x03 } else { 0x01 };
        pic.write_port(MASTER_DATA, 0xff);
        pic.write_port(SLAVE_DATA, 0xff);
        pic.write_port(MASTER_COMMAND, 0x11);
        pic.write_port(MASTER_DATA, 0x30);
        pic.write_port(MASTER_DATA, 1 << CASCADE_LINE);
        pic.write_port(MASTER_DATA, icw4);
        pic.write_port(SLAVE_COMMAND, 0x11);
        pic.write_port(SLAVE_DATA, 0x38);
        pic.write_port(SLAVE_DATA, CASCADE_LINE);
        pic.write_port(SLAVE_DATA, icw4);
        // Unmask everything but IRQ 5 and IRQ 13.
        pic.write_port(MASTER_DATA, 1 << 5);
        pic.write_port(SLAVE_DATA, 1 << 5);
        pic
    }

    fn edge(pic: &mut PicPair, line: u8) {
        pic.set_irq(line, true);
        pic.set_irq(line, false);
    }

    #[test]
    fn irq0_is_delivered_once_until_eoi() {
        let mut pic = linux_init(false);
        assert_eq!(pic.pending_vector(), None);
        edge(&mut pic, 0);
        assert_eq!(pic.pending_vector(), Some(0x30));
        assert_eq!(pic.acknowledge(), Some(0x30));
        pic.write_port(MASTER_COMMAND, 0x0b); // OCW3: read ISR
        assert_eq!(pic.read_port(MASTER_COMMAND), 0x01);
        // Another edge while in service: requested, but not delivered before EOI.
        edge(&mut pic, 0);
        assert_eq!(pic.pending_vector(), None);
        assert_eq!(pic.acknowledge(), None);
        pic.write_port(MASTER_COMMAND, 0x0a); // OCW3: read IRR
        assert_eq!(pic.read_port(MASTER_COMMAND), 0x01);
        pic.write_port(MASTER_COMMAND, 0x20); // non-specific EOI
        assert_eq!(pic.acknowledge(), Some(0x30));
        pic.write_port(MASTER_COMMAND, 0x60); // specific EOI, line 0
        assert_eq!(pic.pending_vector(), None);
    }

    #[test]
    fn a_held_edge_line_requests_once() {
        let mut pic = linux_init(false);
        pic.set_irq(4, true);
        assert_eq!(pic.acknowledge(), Some(0x34));
        pic.write_port(MASTER_COMMAND, 0x20);
        pic.set_irq(4, true);
        assert_eq!(pic.pending_vector(), None, "no new edge");
    }

    #[test]
    fn masked_lines_wait_until_unmasked() {
        let mut pic = linux_init(false);
        edge(&mut pic, 5);
        assert_eq!(pic.pending_vector(), None);
        pic.write_port(MASTER_DATA, 0);
        assert_eq!(pic.pending_vector(), Some(0x35));
        assert_eq!(pic.read_port(MASTER_DATA), 0);
    }

    #[test]
    fn higher_priority_preempts_lower_in_service() {
        let mut pic = linux_init(false);
        edge(&mut pic, 4);
        assert_eq!(pic.acknowledge(), Some(0x34));
        edge(&mut pic, 6);
        assert_eq!(pic.pending_vector(), None, "IRQ 6 is below IRQ 4");
        edge(&mut pic, 1);
        assert_eq!(pic.acknowledge(), Some(0x31), "IRQ 1 is above IRQ 4");
        pic.write_port(MASTER_COMMAND, 0x20); // EOI for IRQ 1, the highest in service
        assert_eq!(pic.pending_vector(), None);
        pic.write_port(MASTER_COMMAND, 0x20); // EOI for IRQ 4
        assert_eq!(pic.acknowledge(), Some(0x36));
    }

    #[test]
    fn slave_lines_arrive_through_the_cascade() {
        let mut pic = linux_init(false);
        edge(&mut pic, 8);
        pic.write_port(MASTER_COMMAND, 0x0a);
        assert_eq!(
            pic.read_port(MASTER_COMMAND),
            1 << CASCADE_LINE,
            "slave INT on IR2"
        );
        assert_eq!(pic.pending_vector(), Some(0x38));
        assert_eq!(pic.acknowledge(), Some(0x38));
        pic.write_port(MASTER_COMMAND, 0x0b);
        pic.write_port(SLAVE_COMMAND, 0x0b);
        assert_eq!(pic.read_port(MASTER_COMMAND), 1 << CASCADE_LINE);
        assert_eq!(pic.read_port(SLAVE_COMMAND), 0x01);
        // IRQ 12 waits behind the master's IR2 in service, even though it is another line.
        edge(&mut pic, 12);
        assert_eq!(pic.pending_vector(), None);
        // Linux's EOI for a slave line: specific EOI to both chips.
        pic.write_port(SLAVE_COMMAND, 0x60);
        pic.write_port(MASTER_COMMAND, 0x62);
        assert_eq!(pic.acknowledge(), Some(0x3c));
        // Masking the cascade masks the whole slave.
        pic.write_port(SLAVE_COMMAND, 0x64);
        pic.write_port(MASTER_COMMAND, 0x62);
        edge(&mut pic, 9);
        pic.write_port(MASTER_DATA, 1 << CASCADE_LINE);
        assert_eq!(pic.pending_vector(), None);
        pic.write_port(MASTER_DATA, 0);
        assert_eq!(pic.pending_vector(), Some(0x39));
    }

    #[test]
    fn master_lines_above_the_cascade_outrank_slave_lines_only_by_position() {
        let mut pic = linux_init(false);
        edge(&mut pic, 3);
        edge(&mut pic, 10);
        assert_eq!(
            pic.acknowledge(),
            Some(0x3a),
            "IR2 (the slave) outranks IR3"
        );
        assert_eq!(pic.pending_vector(), None);
    }

    #[test]
    fn auto_eoi_leaves_nothing_in_service() {
        let mut pic = linux_init(true);
        edge(&mut pic, 0);
        assert_eq!(pic.acknowledge(), Some(0x30));
        edge(&mut pic, 0);
        assert_eq!(pic.acknowledge(), Some(0x30));
        edge(&mut pic, 8);
        assert_eq!(pic.acknowledge(), Some(0x38));
        pic.write_port(MASTER_COMMAND, 0x0b);
        assert_eq!(pic.read_port(MASTER_COMMAND), 0);
    }

    #[test]
    fn spurious_irq15_when_the_slave_request_went_away() {
        let mut pic = linux_init(false);
        pic.write_port(ELCR_SLAVE, 1 << 3); // IRQ 11 level-triggered
        pic.set_irq(11, true);
        assert_eq!(pic.pending_vector(), Some(0x3b));
        // The master also sees a request on IR2 of its own (e.g. from the ISA bus).
        pic.set_irq(2, true);
        pic.set_irq(11, false);
        assert_eq!(pic.acknowledge(), Some(0x3f));
        pic.write_port(SLAVE_COMMAND, 0x0b);
        assert_eq!(
            pic.read_port(SLAVE_COMMAND),
            0,
            "a spurious IRQ is not in service"
        );
    }

    #[test]
    fn level_lines_request_while_high() {
        let mut pic = linux_init(false);
        pic.write_port(ELCR_MASTER, 0xff);
        assert_eq!(pic.read_port(ELCR_MASTER), 0xf8, "IRQ 0-2 are always edge");
        pic.set_irq(3, true);
        assert_eq!(pic.acknowledge(), Some(0x33));
        pic.write_port(MASTER_COMMAND, 0x20);
        assert_eq!(
            pic.pending_vector(),
            Some(0x33),
            "still high: requests again"
        );
        pic.set_irq(3, false);
        assert_eq!(pic.pending_vector(), None);
    }

    #[test]
    fn poll_mode_acknowledges_through_the_command_port() {
        let mut pic = linux_init(false);
        edge(&mut pic, 6);
        pic.write_port(MASTER_COMMAND, 0x0c);
        assert_eq!(pic.read_port(MASTER_COMMAND), 0x86);
        assert_eq!(pic.pending_vector(), None, "IRQ 6 is in service");
        pic.write_port(MASTER_COMMAND, 0x0c);
        assert_eq!(pic.read_port(MASTER_COMMAND), 0);
    }

    #[test]
    fn rotation_changes_priorities() {
        let mut pic = linux_init(false);
        pic.write_port(MASTER_COMMAND, 0xc3); // set priority: IRQ 3 lowest, IRQ 4 highest
        edge(&mut pic, 0);
        edge(&mut pic, 4);
        assert_eq!(pic.acknowledge(), Some(0x34));
        pic.write_port(MASTER_COMMAND, 0xa0); // rotate on non-specific EOI: IRQ 4 lowest
        assert_eq!(pic.acknowledge(), Some(0x30));
    }

    #[test]
    fn reinitialisation_resets_state() {
        let mut pic = linux_init(false);
        edge(&mut pic, 1);
        assert_eq!(pic.acknowledge(), Some(0x31));
        pic.write_port(MASTER_COMMAND, 0x11);
        pic.write_port(MASTER_DATA, 0x20);
        pic.write_port(MASTER_DATA, 0x04);
        pic.write_port(MASTER_DATA, 0x01);
        edge(&mut pic, 1);
        assert_eq!(
            pic.acknowledge(),
            Some(0x21),
            "new base; the old ISR bit is gone"
        );
    }
}
