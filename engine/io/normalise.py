"""Type normalisation: one Arrow type per kind for the rest of segone (:func:`normalize_schema`)."""

import pyarrow as pa
import pyarrow.compute as pc



# ------------------------------------------------------------ type normalisation
_is_string_view = getattr(pa.types, "is_string_view", lambda t: False)
_is_binary_view = getattr(pa.types, "is_binary_view", lambda t: False)
_is_list_view = getattr(pa.types, "is_list_view", lambda t: False)
_is_large_list_view = getattr(pa.types, "is_large_list_view", lambda t: False)


def normalize_type(t):
    """The one type segone uses for values of type ``t`` (``t`` itself when it is already normal)."""
    if pa.types.is_large_string(t) or _is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or _is_binary_view(t):
        return pa.binary()
    if pa.types.is_dictionary(t):
        value = normalize_type(t.value_type)
        index = t.index_type if pa.types.is_signed_integer(t.index_type) else pa.int32()
        if value.equals(t.value_type) and index.equals(t.index_type):
            return t
        return pa.dictionary(index, value, t.ordered)
    if pa.types.is_large_list(t) or pa.types.is_list(t) or _is_list_view(t) or _is_large_list_view(t):
        field = _normalize_field(t.value_field)
        if pa.types.is_list(t) and field.equals(t.value_field):
            return t
        return pa.list_(field)
    if pa.types.is_struct(t):
        fields = [_normalize_field(t.field(i)) for i in range(t.num_fields)]
        if all(f.equals(t.field(i)) for i, f in enumerate(fields)):
            return t
        return pa.struct(fields)
    return t


def _normalize_field(field):
    t = normalize_type(field.type)
    return field if t is field.type or t.equals(field.type) else field.with_type(t)


def normalize_schema(schema):
    """``schema`` with every field's type normalised (:func:`normalize_type`); the same object when nothing changes."""
    fields, changed = [], False
    for field in schema:
        t = normalize_type(field.type)
        changed |= t is not field.type and not t.equals(field.type)
        fields.append(field.with_type(t))
    return pa.schema(fields, metadata=schema.metadata) if changed else schema


def to_float64(col):
    """A numeric Arrow column as float64 (integers beyond 2**53 rounded, never refused as a safe cast would)."""
    if col.type == pa.float64():
        return col
    return pc.cast(col, pa.float64(), safe=not pa.types.is_integer(col.type))


def normalize_table(table):
    """A pyarrow Table (or RecordBatch) with its column types normalised (zero-copy when they already are)."""
    schema = normalize_schema(table.schema)
    if schema is table.schema:
        return table
    if isinstance(table, pa.RecordBatch):
        return _cast_batch(table, schema)
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowCapacityError):
        # a chunk too large for 32-bit offsets: cast it in smaller slices
        return pa.Table.from_batches(table.to_batches(max_chunksize=1 << 16), schema=table.schema).cast(schema)


def _cast_batch(batch, schema):
    if schema is batch.schema:
        return batch
    arrays = [c if f.type.equals(c.type) else c.cast(f.type) for c, f in zip(batch.columns, schema)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
