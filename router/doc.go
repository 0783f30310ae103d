// Package router declares a whole service in one place: routes with their
// topology, subscribers and middleware stack, on a Watermill message.Router.
package router
