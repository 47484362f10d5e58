/** Decoding of command payloads for every handler family, with one error shape. */
import { type DescMessage, fromBinary, type MessageShape } from "@bufbuild/protobuf";
import { errorMessage, InvalidInputError } from "@aranya/common/errors";

/** Decodes `payload` as `schema`; a malformed payload is an InvalidInputError naming the type. */
export function decodePayload<D extends DescMessage>(
  schema: D,
  payload: Uint8Array,
): MessageShape<D> {
  try {
    return fromBinary(schema, payload);
  } catch (err) {
    throw new InvalidInputError(`Malformed ${schema.name}: ${errorMessage(err)}`);
  }
}
