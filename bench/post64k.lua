-- wrk script: POST a 64 KiB (65536-byte) body, for bench/echo.sh.
local parts = {}
for i = 1, 1024 do
  parts[i] = string.rep(string.char(97 + (i % 26)), 64)
end
local body = table.concat(parts)
assert(#body == 65536, "body is " .. #body .. " bytes")

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/octet-stream"
