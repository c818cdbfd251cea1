-- The echo job: its result is its data (smoke tests).
return function(data)
  return data
end
