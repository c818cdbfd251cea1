return function(data) return data end
