local VERSION = "v1"
return function() return VERSION end
