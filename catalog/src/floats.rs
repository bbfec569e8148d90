//! Floats that are equal in Postgres, made equal in Arrow. Arrow sorts,
//! compares and hashes floats by their bits, so a NaN with its sign bit set
//! (what x86 makes of `'Infinity' - 'Infinity'` or `-'NaN'`, and what a
//! record's raw bytes can hold) sorts below every number and is not equal
//! to NaN, and encoded keys hold `-0` and `0` apart. Postgres has one NaN,
//! above every number and equal to itself, and `-0 = 0`.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{ArrowPrimitiveType, DataType, Float32Type, Float64Type};
use datafusion::common::ScalarValue;

/// `array` with every NaN made the positive quiet NaN, the one NaN Eddy
/// computes and stores; other arrays, and arrays without another NaN, are
/// returned as they are.
pub fn canonical_nan(array: ArrayRef) -> ArrayRef {
    canonical(array, false)
}

/// `array` as a key is encoded: one NaN, and `-0` as `0`, so that values
/// Postgres calls equal group, join and consolidate as one.
pub fn canonical_key(array: ArrayRef) -> ArrayRef {
    canonical(array, true)
}

/// `value` with a NaN made the positive quiet NaN.
pub fn canonical_nan_scalar(value: ScalarValue) -> ScalarValue {
    match value {
        ScalarValue::Float64(Some(v)) => ScalarValue::Float64(Some(v.canonical(false))),
        ScalarValue::Float32(Some(v)) => ScalarValue::Float32(Some(v.canonical(false))),
        other => other,
    }
}

fn canonical(array: ArrayRef, zero: bool) -> ArrayRef {
    match array.data_type() {
        DataType::Float64 => canonical_floats::<Float64Type>(array, zero),
        DataType::Float32 => canonical_floats::<Float32Type>(array, zero),
        _ => array,
    }
}

fn canonical_floats<T>(array: ArrayRef, zero: bool) -> ArrayRef
where
    T: ArrowPrimitiveType,
    T::Native: Float,
{
    let values = array.as_primitive::<T>();
    let changes = |v: &T::Native| !v.canonical(zero).same_bits(*v);
    if !values.values().iter().any(changes) {
        return array;
    }
    Arc::new(values.unary::<_, T>(|v| v.canonical(zero))) as ArrayRef
}

/// The floats Arrow holds: their one NaN and their zero.
trait Float: Copy {
    fn canonical(self, zero: bool) -> Self;
    fn same_bits(self, other: Self) -> bool;
}

macro_rules! float {
    ($t:ty) => {
        impl Float for $t {
            fn canonical(self, zero: bool) -> Self {
                if self.is_nan() {
                    <$t>::NAN
                } else if zero && self == 0.0 {
                    0.0
                } else {
                    self
                }
            }

            fn same_bits(self, other: Self) -> bool {
                self.to_bits() == other.to_bits()
            }
        }
    };
}

float!(f64);
float!(f32);

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float32Array, Float64Array, Int64Array};

    fn negative_nan() -> f64 {
        -f64::NAN
    }

    fn bits(array: &ArrayRef) -> Vec<u64> {
        let values = array.as_primitive::<Float64Type>();
        values.values().iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn every_nan_becomes_the_positive_quiet_nan() {
        let inf = f64::INFINITY;
        let computed = std::hint::black_box(inf) - std::hint::black_box(inf);
        let nans = [
            negative_nan(),
            computed,
            f64::from_bits(0x7ff0_0000_0000_0001),
        ];
        let array: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(nans[0]),
            None,
            Some(-0.0),
            Some(nans[1]),
            Some(1.5),
            Some(nans[2]),
        ]));
        let fixed = canonical_nan(array.clone());
        assert_eq!(fixed.null_count(), 1);
        assert!(fixed.is_null(1));
        let nan = f64::NAN.to_bits();
        let b = bits(&fixed);
        assert_eq!(
            [b[0], b[2], b[3], b[4], b[5]],
            [nan, (-0.0f64).to_bits(), nan, 1.5f64.to_bits(), nan]
        );
        // As a key, -0 is 0 too.
        let key = canonical_key(array);
        assert_eq!(bits(&key)[2], 0);
        assert_eq!(bits(&key)[0], nan);
    }

    #[test]
    fn arrays_with_nothing_to_change_are_kept() {
        let array: ArrayRef = Arc::new(Float32Array::from(vec![1.0, f32::NAN, -2.0]));
        assert!(Arc::ptr_eq(&array, &canonical_nan(array.clone())));
        assert!(Arc::ptr_eq(&array, &canonical_key(array.clone())));
        let zero: ArrayRef = Arc::new(Float32Array::from(vec![-0.0]));
        assert!(Arc::ptr_eq(&zero, &canonical_nan(zero.clone())));
        let key = canonical_key(zero);
        assert_eq!(key.as_primitive::<Float32Type>().value(0).to_bits(), 0);
        let other: ArrayRef = Arc::new(Float32Array::from(vec![-f32::NAN]));
        let fixed = canonical_nan(other);
        assert_eq!(
            fixed.as_primitive::<Float32Type>().value(0).to_bits(),
            f32::NAN.to_bits()
        );
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        assert!(Arc::ptr_eq(&ints, &canonical_key(ints.clone())));
    }

    #[test]
    fn scalars_too() {
        let ScalarValue::Float64(Some(v)) =
            canonical_nan_scalar(ScalarValue::Float64(Some(negative_nan())))
        else {
            panic!("not a float");
        };
        assert_eq!(v.to_bits(), f64::NAN.to_bits());
        assert_eq!(
            canonical_nan_scalar(ScalarValue::Int32(Some(3))),
            ScalarValue::Int32(Some(3))
        );
    }
}
