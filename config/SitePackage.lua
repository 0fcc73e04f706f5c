-- Lmod hook for lmod-tracker: one syslog message per module load.
--
-- Install on every node that runs Lmod, e.g. as /etc/lmod/SitePackage.lua, and point Lmod at
-- it (export LMOD_PACKAGE_PATH=/etc/lmod in /etc/profile.d, or configure Lmod with
-- --with-siteControlPrefix). Check with `module --config 2>&1 | grep -i sitepackage`.
--
-- Loads are collected while the `module` command runs and sent when it exits, so a `module
-- load` that fails half way reports only what was really loaded. Each message looks like
--   user=alice jobid=123456 module=gcc/12.2.0 path=/opt/modulefiles/gcc/12.2.0.lua
--   host=node001.cluster.example.org time=1700000000.123456
-- and is sent with `logger -t ModuleUsageTracking` (the tag lmod-tracker's syslog_tag expects).

require("strict")
local hook  = require("Hook")
local posix = require("posix")

local tracker_tag = os.getenv("LMOD_TRACKER_TAG") or "ModuleUsageTracking"
local tracker_loads = {}

-- Values go into a shell command line: keep only characters that are safe there.
local function tracker_clean(value)
   return (tostring(value or ""):gsub("[^%w%._/%-%+@,:=]", "_"))
end

local function tracker_load_hook(t)
   if mode() ~= "load" then return end
   local job = os.getenv("SLURM_JOB_ID") or os.getenv("PBS_JOBID") or "nil"
   local host = posix.uname("%n")
   local msg = string.format("user=%s jobid=%s module=%s path=%s host=%s time=%.6f",
      tracker_clean(os.getenv("USER")), tracker_clean(job), tracker_clean(t.modFullName),
      tracker_clean(t.fn), tracker_clean(host), epoch())
   tracker_loads[#tracker_loads + 1] = msg
end

local function tracker_send()
   for _, msg in ipairs(tracker_loads) do
      lmod_system_execute("logger -t " .. tracker_tag .. " -p user.info '" .. msg .. "'")
   end
   tracker_loads = {}
end

hook.register("load", tracker_load_hook)
ExitHookA.register(tracker_send)
