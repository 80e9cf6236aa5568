-- Tests config/shipping/ocu_billable.lua the way Fluent Bit calls it:
--   luajit scripts/ocu_billable_test.lua config/shipping/ocu_billable.lua
-- (Fluent Bit runs filters on LuaJIT; JSON true/false arrive as Lua booleans.)
-- With OCU_ENVIRONMENT_ID unset it checks instead that the script refuses to load.
local loaded, err = pcall(dofile, arg[1])
if os.getenv("OCU_ENVIRONMENT_ID") == nil then
    if loaded or not tostring(err):find("OCU_ENVIRONMENT_ID", 1, true) then
        print("FAIL ocu_billable.lua loads without OCU_ENVIRONMENT_ID: " .. tostring(err))
        os.exit(1)
    end
    print("ocu_billable.lua refuses to load without OCU_ENVIRONMENT_ID")
    os.exit(0)
end
if not loaded then
    print("FAIL ocu_billable.lua does not load: " .. tostring(err))
    os.exit(1)
end

local cases = {
    {name = "org record is metered", want = 0,
     rec = {v = 1, id = "01a", billing = "org", ocu_billable = true}},
    {name = "chatgpt_plan record is not metered", want = -1,
     rec = {v = 1, id = "01b", billing = "chatgpt_plan", ocu_billable = false}},
    {name = "the string \"true\" is not the boolean", want = -1,
     rec = {v = 1, id = "01c", ocu_billable = "true"}},
    {name = "record without ocu_billable", want = -1,
     rec = {v = 1, id = "01d"}},
    {name = "line that did not parse as JSON", want = -1,
     rec = {log = "{\"v\":1,\"ocu_billable\":true"}},
    {name = "unknown schema version is held back", want = -1,
     rec = {v = 2, id = "01e", ocu_billable = true}},
}

local failed = 0
for _, c in ipairs(cases) do
    local code, ts, out = keep_ocu_billable("codex.ledger.ocu", 1764000000.5, c.rec)
    if code ~= c.want or ts ~= 1764000000.5 or out ~= c.rec then
        failed = failed + 1
        print(string.format("FAIL %s: returned %s", c.name, tostring(code)))
    end
end
print(string.format("ocu_billable.lua: %d of %d cases pass", #cases - failed, #cases))
os.exit(failed == 0 and 0 or 1)
