/**
 * Collects items until the end of the current event-loop turn, then hands them to `flush` together.
 *
 * Under load a turn reads many requests at once (the poll phase runs every socket that has data before the
 * check phase runs `setImmediate` callbacks), so work that is cheaper in bulk, a Redis round trip above all,
 * is done once per turn instead of once per request. An idle server flushes batches of one, at once.
 */
export function batchPerTurn<T>(flush: (items: T[]) => void): (item: T) => void {
  let items: T[] = [];
  const flushCollected = () => {
    const batch = items;
    items = [];
    flush(batch);
  };
  return function collect(item) {
    items.push(item);
    if (items.length === 1) setImmediate(flushCollected);
  };
}
