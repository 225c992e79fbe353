//! Configuration errors that name the field path and the offending value.

use std::fmt;

/// Where in a configuration a problem was found, written the way the operator wrote it:
/// `static_resources.listeners[0].address.socket_address.port_value`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(String);

/// One problem with one field of a configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The field at fault.
    pub path: Path,
    /// What is wrong with it, including the value where there is one.
    pub problem: String,
}

/// Every problem found in a configuration; conversion keeps going after the first one so an
/// operator can fix a file in one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Collects errors while a configuration is converted.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

/// Whether a protobuf field holds something other than its default, i.e. whether the operator
/// set it. Used to reject fields Skiff does not implement only when they are actually used.
pub(crate) trait IsSet {
    fn is_set(&self) -> bool;
}

// === impl Path ===

impl Path {
    /// The path of a whole document (no prefix).
    pub fn root() -> Self {
        Self(String::new())
    }

    /// A path starting at a named element, such as a resource name.
    pub fn named(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The path of a field of this message.
    pub fn field(&self, name: &str) -> Self {
        if self.0.is_empty() {
            Self(name.to_string())
        } else {
            Self(format!("{}.{name}", self.0))
        }
    }

    /// The path of an element of this repeated field.
    pub fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("(document)")
        } else {
            f.write_str(&self.0)
        }
    }
}

// === impl ConfigError ===

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.0.is_empty() {
            f.write_str(&self.problem)
        } else {
            write!(f, "{}: {}", self.path, self.problem)
        }
    }
}

impl ConfigError {
    /// A problem at `path`.
    pub fn new(path: &Path, problem: impl Into<String>) -> Self {
        Self {
            path: path.clone(),
            problem: problem.into(),
        }
    }
}

// === impl ConfigErrors ===

impl ConfigErrors {
    /// A single error.
    pub fn one(error: ConfigError) -> Self {
        Self(vec![error])
    }

    /// The number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there is no problem at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} configuration error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self::one(e)
    }
}

// === impl Ctx ===

impl Ctx {
    /// Records a problem at `path`.
    pub(crate) fn error(&mut self, path: &Path, problem: impl Into<String>) {
        self.errors.push(ConfigError::new(path, problem));
    }

    /// Records something valid that probably does not do what the operator expects.
    pub(crate) fn warn(&mut self, path: &Path, problem: impl Into<String>) {
        self.warnings.push(ConfigError::new(path, problem));
    }

    /// Takes over everything `other` recorded.
    pub(crate) fn absorb(&mut self, other: Ctx) {
        self.errors.extend(other.errors);
        self.warnings.extend(other.warnings);
    }

    /// Takes the warnings recorded so far.
    pub(crate) fn take_warnings(&mut self) -> Vec<ConfigError> {
        std::mem::take(&mut self.warnings)
    }

    /// Rejects `field` of the message at `path` if the operator set it: Skiff does not implement
    /// it, and ignoring it would silently change what the configuration means.
    pub(crate) fn unsupported<T: IsSet + fmt::Debug>(
        &mut self,
        path: &Path,
        field: &str,
        value: &T,
    ) {
        if value.is_set() {
            self.error(
                &path.field(field),
                format!("not supported by Skiff (value: {})", show(value)),
            );
        }
    }

    /// The number of errors recorded so far; compare before and after converting a part to know
    /// whether that part failed.
    pub(crate) fn count(&self) -> usize {
        self.errors.len()
    }

    /// Ends the conversion: `value` if nothing went wrong, else every recorded error.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => {
                let mut errors = self.errors;
                if errors.is_empty() {
                    // A conversion that gave up must have said why; keep that promise visible.
                    errors.push(ConfigError::new(&Path::root(), "invalid configuration"));
                }
                Err(ConfigErrors(errors))
            }
        }
    }
}

/// Renders a protobuf value for an error message: short, without prost's `Some(..)` and
/// wrapper-message noise.
pub(crate) fn show<T: fmt::Debug + ?Sized>(value: &T) -> String {
    const MAX: usize = 120;
    let mut s = format!("{value:?}");
    if let Some(inner) = s.strip_prefix("Some(").and_then(|r| r.strip_suffix(')')) {
        s = inner.to_string();
    }
    // google.protobuf wrappers (`UInt32Value { value: 5 }`) and durations.
    if let Some((name, rest)) = s.split_once(" { value: ")
        && name.ends_with("Value")
        && !name.contains(' ')
        && let Some(inner) = rest.strip_suffix(" }")
    {
        s = inner.to_string();
    }
    if let Some(rest) = s.strip_prefix("Duration { seconds: ")
        && let Some((secs, nanos)) = rest
            .strip_suffix(" }")
            .and_then(|r| r.split_once(", nanos: "))
    {
        s = if nanos == "0" {
            format!("{secs}s")
        } else {
            format!("{secs}s {nanos}ns")
        };
    }
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

// === impl IsSet ===

macro_rules! is_set_by_default {
    ($($t:ty),*) => {$(
        impl IsSet for $t {
            fn is_set(&self) -> bool {
                *self != <$t>::default()
            }
        }
    )*};
}
is_set_by_default!(bool, i32, i64, u32, u64, f32, f64, String);

impl<T> IsSet for Option<T> {
    fn is_set(&self) -> bool {
        self.is_some()
    }
}

impl<T> IsSet for Vec<T> {
    fn is_set(&self) -> bool {
        !self.is_empty()
    }
}

impl<K, V, S> IsSet for std::collections::HashMap<K, V, S> {
    fn is_set(&self) -> bool {
        !self.is_empty()
    }
}

impl<T: IsSet + ?Sized> IsSet for &T {
    fn is_set(&self) -> bool {
        (**self).is_set()
    }
}

impl<T: IsSet + ?Sized> IsSet for Box<T> {
    fn is_set(&self) -> bool {
        (**self).is_set()
    }
}

/// Rejects each named local (a field bound by destructuring a message) that the operator set.
macro_rules! reject_unsupported {
    ($ctx:expr, $path:expr, $($field:ident),+ $(,)?) => {
        $( $ctx.unsupported($path, stringify!($field), &$field); )+
    };
}
pub(crate) use reject_unsupported;
