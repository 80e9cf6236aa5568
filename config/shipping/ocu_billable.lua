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
--
-- Fluent Bit replaces an unset ${VAR} in its config with an empty string and
-- starts anyway; for billing that would mean records without an environment or
-- a metering service at 127.0.0.1. So the variables fluent-bit.conf needs are
-- checked when this script loads, and Fluent Bit refuses to start without them.
local required = {
    "OCU_ENVIRONMENT_ID", "OCU_METERING_HOST", "OCU_METERING_PORT", "OCU_METERING_PATH",
    "OCU_METERING_TOKEN", "LEDGER_AUDIT_BUCKET", "LEDGER_AUDIT_REGION",
}
for _, name in ipairs(required) do
    local value = os.getenv(name)
    if value == nil or value == "" then
        error("codex-sidecar ledger shipping: environment variable " .. name ..
              " is not set (see the header of fluent-bit.conf)")
    end
end

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
