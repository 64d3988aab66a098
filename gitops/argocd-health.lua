-- Argo CD health check for thrifty.dev ModelService, GPUPool and CostBudget.
--
-- It reads only the status conventions the operator follows (observedGeneration and the
-- Ready/Progressing/Degraded conditions), the same signals Flux's kstatus reads, so Argo CD and
-- Flux agree on whether a sync is healthy. Written for Argo CD's Lua 5.1 (gopher-lua).
local hs = {}

local function condition(conditions, type)
  for _, c in ipairs(conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function message(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the thrifty operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the thrifty operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = obj.status.conditions or {}
local degraded = condition(conditions, "Degraded")
local ready = condition(conditions, "Ready")
local progressing = condition(conditions, "Progressing")

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = message(degraded, "Degraded")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message(ready, "Ready")
  return hs
end
if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = message(progressing, "Progressing")
  return hs
end
if ready ~= nil and ready.status == "False" then
  -- Not ready and nothing in progress: it will not become ready by waiting (e.g. no capacity).
  hs.status = "Degraded"
  hs.message = message(ready, "Not ready")
  return hs
end
-- No Ready condition (a CostBudget reports only its spend): the status is current, as kstatus says.
hs.status = "Healthy"
hs.message = "Status observed"
return hs
