import { type JsonSchema, type OverrideActionContext, toJsonSchema } from "@valibot/to-json-schema";
import type * as v from "valibot";
import { MAX_KEY_BYTES } from "../../lib/settings.ts";
import { bodyIsNotAnArray, keyFitsInIndex, keyHasNoNul, keyIsWellFormed } from "../schemas.ts";

// Every schema of what a client sends is converted from the very valibot schemas the operations validate
// with, so the document cannot promise a rule the API does not enforce or miss one it does.

// The key's checks are opaque functions to the converter: state each in JSON Schema. Patterns are written to
// mean the same with and without the regex `u` flag, since JSON Schema validators differ there.
const KEY_CHECKS = new Map<unknown, JsonSchema>([
  // The object schema it precedes says "type": "object", which no array is.
  [bodyIsNotAnArray, {}],
  [keyHasNoNul, { not: { pattern: "\\u0000" } }],
  // JSON Schema counts characters, never bytes: say it in words (describeProperties may say more).
  [keyFitsInIndex, { description: `At most ${MAX_KEY_BYTES} bytes in UTF-8.` }],
  // Every UTF-16 unit is outside the surrogate range or half of a proper pair.
  [keyIsWellFormed, { pattern: "^(?:[^\\ud800-\\udfff]|[\\ud800-\\udbff][\\udc00-\\udfff])*$" }],
]);

function stateInJsonSchema({ valibotAction, jsonSchema }: OverrideActionContext): JsonSchema | undefined {
  const stated = KEY_CHECKS.get(valibotAction);
  if (stated !== undefined) {
    // Two checks may want the same keyword (two patterns): the second goes under allOf.
    const clash = Object.keys(stated).some((keyword) => keyword in jsonSchema);
    return clash
      ? { ...jsonSchema, allOf: [...(jsonSchema.allOf ?? []), stated] }
      : { ...jsonSchema, ...stated };
  }
  // JSON Schema's maxLength counts characters as RFC 8259 defines them, i.e. code points (a surrogate pair
  // is one; JSON-Schema-Test-Suite's maxLength cases check exactly that), as valibot's maxCodePoints does.
  if (
    valibotAction.type === "max_code_points" &&
    "requirement" in valibotAction &&
    typeof valibotAction.requirement === "number"
  ) {
    return { ...jsonSchema, maxLength: valibotAction.requirement };
  }
  // Anything else is the converter's: what it cannot state throws (errorMode stays "throw"), so a rule added
  // to a schema cannot silently go undocumented.
  return undefined;
}

/** A valibot schema as a JSON Schema in OpenAPI 3.1's dialect (2020-12). */
export function jsonSchemaOf(schema: v.GenericSchema, description?: string): JsonSchema {
  const { $schema: _dialect, ...json } = toJsonSchema(schema, {
    target: "draft-2020-12",
    // A pipe of two schemas (the body: unknown, then the object) is documented by its last: what passes.
    typeMode: "output",
    overrideAction: stateInJsonSchema,
  });
  return description === undefined ? json : { ...json, description };
}

/** Adds descriptions to an object schema's properties (the routes' schemas carry no prose, on purpose). */
export function describeProperties(schema: JsonSchema, descriptions: Record<string, string>): JsonSchema {
  const properties = { ...schema.properties };
  for (const [name, description] of Object.entries(descriptions)) {
    const property = properties[name];
    if (typeof property !== "object") throw new Error(`the schema has no property "${name}" to describe`);
    properties[name] = { ...property, description };
  }
  return { ...schema, properties };
}
