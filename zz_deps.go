package csmutex_test

import (
	_ "github.com/go-resty/resty/v2"
	_ "github.com/jarcoal/httpmock"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/prometheus/client_golang/prometheus/testutil"
	_ "github.com/rs/zerolog"
	_ "github.com/sethvargo/go-retry"
)
