//! GPIO outputs driven by rules, through `embedded-hal` 1.0 `OutputPin`.
//!
//! An output is held high while at least one event of a rule naming it is
//! active (reference counted), so two overlapping events do not switch a
//! siren off early. On Linux the pins are GPIO character-device lines
//! (`gpiocdev`, GPIO v2 uAPI); the `log` backend prints instead.

use embedded_hal::digital::{ErrorType, OutputPin};
use std::collections::BTreeMap;

/// An output pin with its error turned into a message, so pins of different
/// HAL types can live in one map.
pub trait DynPin: Send {
    fn set(&mut self, high: bool) -> Result<(), String>;
}

impl<P> DynPin for P
where
    P: OutputPin + Send,
    P::Error: std::fmt::Debug,
{
    fn set(&mut self, high: bool) -> Result<(), String> {
        if high {
            self.set_high()
        } else {
            self.set_low()
        }
        .map_err(|e| format!("{e:?}"))
    }
}

/// Named outputs with a hold count each.
pub struct Outputs {
    pins: BTreeMap<String, (Box<dyn DynPin>, u32)>,
}

impl Outputs {
    pub fn new() -> Self {
        Outputs {
            pins: BTreeMap::new(),
        }
    }

    /// Adds a pin, driven low at once.
    pub fn add(&mut self, name: &str, mut pin: Box<dyn DynPin>) -> Result<(), String> {
        pin.set(false)?;
        self.pins.insert(name.to_string(), (pin, 0));
        Ok(())
    }

    /// One more holder of `name`: the pin goes high on the first.
    /// Unknown names are ignored (validated at config load).
    pub fn hold(&mut self, name: &str) -> Result<(), String> {
        match self.pins.get_mut(name) {
            Some((pin, n)) => {
                *n += 1;
                if *n == 1 {
                    pin.set(true)?;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// One holder fewer: the pin goes low when none is left.
    pub fn release(&mut self, name: &str) -> Result<(), String> {
        match self.pins.get_mut(name) {
            Some((pin, n)) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    pin.set(false)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Drives every pin low (shutdown).
    pub fn all_low(&mut self) {
        for (pin, n) in self.pins.values_mut() {
            *n = 0;
            let _ = pin.set(false);
        }
    }
}

impl Default for Outputs {
    fn default() -> Self {
        Self::new()
    }
}

/// A pin that only logs its changes to stderr (the `log` backend).
pub struct LogPin {
    pub name: String,
}

impl ErrorType for LogPin {
    type Error = core::convert::Infallible;
}

impl OutputPin for LogPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        crate::log_info!("strixd: gpio {} low", self.name);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        crate::log_info!("strixd: gpio {} high", self.name);
        Ok(())
    }
}

/// A Linux GPIO character-device output line.
#[cfg(all(feature = "gpio-cdev", target_os = "linux"))]
pub mod cdev {
    use embedded_hal::digital::{ErrorKind, ErrorType, OutputPin};
    use gpiocdev::line::Value;
    use gpiocdev::Request;

    #[derive(Debug)]
    pub struct CdevError(pub String);

    impl embedded_hal::digital::Error for CdevError {
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    pub struct CdevPin {
        req: Request,
        offset: u32,
    }

    impl CdevPin {
        /// Requests `line` of `chip` as an output, initially inactive.
        pub fn new(
            chip: &std::path::Path,
            line: u32,
            active_low: bool,
            consumer: &str,
        ) -> Result<Self, String> {
            let mut b = Request::builder();
            b.on_chip(chip)
                .with_consumer(consumer)
                .with_line(line)
                .as_output(Value::Inactive);
            if active_low {
                b.as_active_low();
            }
            let req = b
                .request()
                .map_err(|e| format!("{}: line {line}: {e}", chip.display()))?;
            Ok(CdevPin { req, offset: line })
        }
    }

    impl ErrorType for CdevPin {
        type Error = CdevError;
    }

    impl OutputPin for CdevPin {
        fn set_low(&mut self) -> Result<(), CdevError> {
            self.req
                .set_value(self.offset, Value::Inactive)
                .map_err(|e| CdevError(e.to_string()))
        }
        fn set_high(&mut self) -> Result<(), CdevError> {
            self.req
                .set_value(self.offset, Value::Active)
                .map_err(|e| CdevError(e.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A mock HAL pin recording every level it is driven to.
    struct MockPin(Arc<Mutex<Vec<bool>>>);

    impl ErrorType for MockPin {
        type Error = core::convert::Infallible;
    }
    impl OutputPin for MockPin {
        fn set_low(&mut self) -> Result<(), Self::Error> {
            self.0.lock().unwrap().push(false);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Self::Error> {
            self.0.lock().unwrap().push(true);
            Ok(())
        }
    }

    #[test]
    fn hold_release_is_reference_counted() {
        let log = Arc::new(Mutex::new(vec![]));
        let mut o = Outputs::new();
        o.add("siren", Box::new(MockPin(log.clone()))).unwrap();
        o.hold("siren").unwrap();
        o.hold("siren").unwrap();
        o.release("siren").unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [false, true],
            "still held by one event"
        );
        o.release("siren").unwrap();
        o.release("siren").unwrap(); // extra release is harmless
        o.hold("nope").unwrap();
        assert_eq!(*log.lock().unwrap(), [false, true, false]);
        o.hold("siren").unwrap();
        o.all_low();
        assert_eq!(*log.lock().unwrap(), [false, true, false, true, false]);
    }
}
