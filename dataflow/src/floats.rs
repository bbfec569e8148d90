//! One NaN, as in Postgres. Arrow sorts, compares and hashes floats by
//! their bits, so a NaN with its sign bit set (what x86 makes of
//! `'Infinity' - 'Infinity'` or `-'NaN'`, and what a record's raw bytes can
//! hold) sorts below every number and is not equal to NaN, and `GROUP BY`
//! keeps the two apart. Postgres has one NaN, above every number and equal
//! to itself. Eddy turns every NaN it computes or reads into the positive
//! quiet NaN, which Arrow's order puts above every number.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};
use datafusion::common::ScalarValue;

/// `array` with every NaN made the positive quiet NaN; other arrays and
/// arrays without another NaN are returned as they are.
pub fn canonical_nan(array: ArrayRef) -> ArrayRef {
    match array.data_type() {
        DataType::Float64 => {
            let values = array.as_primitive::<Float64Type>();
            if !values.values().iter().any(|v| is_other_nan64(*v)) {
                return array;
            }
            Arc::new(values.unary::<_, Float64Type>(canonical64)) as ArrayRef
        }
        DataType::Float32 => {
            let values = array.as_primitive::<Float32Type>();
            if !values.values().iter().any(|v| is_other_nan32(*v)) {
                return array;
            }
            Arc::new(values.unary::<_, Float32Type>(canonical32)) as ArrayRef
        }
        _ => array,
    }
}

/// `value` with a NaN made the positive quiet NaN.
pub fn canonical_nan_scalar(value: ScalarValue) -> ScalarValue {
    match value {
        ScalarValue::Float64(Some(v)) => ScalarValue::Float64(Some(canonical64(v))),
        ScalarValue::Float32(Some(v)) => ScalarValue::Float32(Some(canonical32(v))),
        other => other,
    }
}

fn canonical64(v: f64) -> f64 {
    if v.is_nan() {
        f64::NAN
    } else {
        v
    }
}

fn canonical32(v: f32) -> f32 {
    if v.is_nan() {
        f32::NAN
    } else {
        v
    }
}

fn is_other_nan64(v: f64) -> bool {
    v.is_nan() && v.to_bits() != f64::NAN.to_bits()
}

fn is_other_nan32(v: f32) -> bool {
    v.is_nan() && v.to_bits() != f32::NAN.to_bits()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Float32Array, Float64Array, Int64Array};

    fn negative_nan() -> f64 {
        -f64::NAN
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
        let fixed = canonical_nan(array);
        let fixed = fixed.as_primitive::<Float64Type>();
        assert_eq!(fixed.null_count(), 1);
        assert!(fixed.is_null(1));
        for i in [0, 3, 5] {
            assert_eq!(fixed.value(i).to_bits(), f64::NAN.to_bits());
        }
        assert_eq!(fixed.value(2).to_bits(), (-0.0f64).to_bits());
        assert_eq!(fixed.value(4), 1.5);
    }

    #[test]
    fn arrays_without_another_nan_are_kept() {
        let array: ArrayRef = Arc::new(Float32Array::from(vec![1.0, f32::NAN, -2.0]));
        let kept = canonical_nan(array.clone());
        assert!(Arc::ptr_eq(&array, &kept));
        let other: ArrayRef = Arc::new(Float32Array::from(vec![-f32::NAN]));
        let fixed = canonical_nan(other);
        assert_eq!(
            fixed.as_primitive::<Float32Type>().value(0).to_bits(),
            f32::NAN.to_bits()
        );
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        assert!(Arc::ptr_eq(&ints, &canonical_nan(ints.clone())));
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
