-- Fluent Bit filter for the codex-sidecar ledger: lets through only records
-- that OCU metering bills, i.e. `"ocu_billable": true` (billing = org).
--
-- The test is on the JSON boolean itself: Fluent Bit's grep and rewrite_tag
-- filters match regexes against strings only, so they cannot see it.
-- Records of a schema version other than 1 are held back from metering (the
-- audit copy still has them) with a log line, so that a format change is
-- noticed before anything is billed from a record this filter does not know.
--
-- Return codes (Fluent Bit Lua filter): -1 drops the record, 0 keeps it unchanged.

function keep_ocu_billable(tag, timestamp, record)
    if record["ocu_billable"] ~= true then
        return -1, timestamp, record
    end
    if record["v"] ~= 1 then
        print(string.format(
            "[codex-sidecar ledger] record %s has schema version %s: not sent to OCU metering",
            tostring(record["id"]), tostring(record["v"])))
        return -1, timestamp, record
    end
    return 0, timestamp, record
end
