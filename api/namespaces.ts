import type { Client } from "./context.ts";
import { ApiError, type FieldError } from "./errors.ts";

/**
 * Namespaces: a token that carries key prefixes (the tally_prefixes claim) may touch only the counter keys
 * that start with one of them. Compared code unit by code unit, as the keys are stored: "Team-A:" is not
 * "team-a:", a Cyrillic "а" is not a Latin "a", a decomposed "é" is not a composed one, and "%", "_" and
 * "*" mean themselves. A key equal to a prefix is inside it. A token without the claim may touch every key;
 * one with an empty list, none.
 */
export function mayTouch(client: Client, key: string): boolean {
  const { prefixes } = client;
  if (prefixes === undefined) return true;
  for (const prefix of prefixes) if (key.startsWith(prefix)) return true;
  return false;
}

function describePrefixes(client: Client): string {
  const prefixes = client.prefixes ?? [];
  if (prefixes.length === 0) return "it is confined to no key at all";
  return `it is confined to keys starting with ${prefixes.map((prefix) => JSON.stringify(prefix)).join(", ")}`;
}

/**
 * Throws a 403 naming every key of the request the token may not touch, before anything of the request is
 * done. `pointerOf(i)`: the JSON Pointer of the i-th key in the request body; none for a key in the path.
 */
export function checkKeys(
  client: Client,
  keys: readonly string[],
  pointerOf?: (index: number) => string,
): void {
  if (client.prefixes === undefined) return;
  const errors: FieldError[] = [];
  for (const [index, key] of keys.entries()) {
    if (!mayTouch(client, key))
      errors.push({ pointer: pointerOf?.(index) ?? "", detail: "outside the token's prefixes" });
  }
  if (errors.length === 0) return;
  const which = errors.length === 1 ? "a key" : `${errors.length} keys`;
  throw new ApiError(
    "namespace_forbidden",
    `${which} of this request may not be touched with this token: ${describePrefixes(client)}`,
    pointerOf === undefined ? {} : { errors },
  );
}

/** Throws a 403 unless every key that starts with `prefix` is inside one of the token's prefixes. */
export function checkListingPrefix(client: Client, prefix: string): void {
  if (mayTouch(client, prefix)) return;
  throw new ApiError(
    "namespace_forbidden",
    `keys starting with ${JSON.stringify(prefix)} may not be listed with this token: ${describePrefixes(client)}; list with a prefix that starts with one of those`,
  );
}
